"""Property: a rest-hook notification with the right secret (https://hl7.org/fhir/R4/subscription.html,
rest-hook channel; the Subscriptions Backport IG's notification Bundles) is never answered with a server
error, whatever the body holds — resources, Bundles and Backport status resources shaped like an EHR's
with hostile values, on every intake URL form — and a valid notification is accepted afterwards.
The database is up throughout, so a 503 here would be bad input mistaken for an outage (and retried by
the EHR forever): any 5xx fails.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ_SETTINGS, Running
from tests.fuzz.strategies import encode, hostile_text, huge_ints, often, shaped, some, with_deep_part

TYPES = ["Appointment", "DiagnosticReport", "Patient", "Bundle"]
fhir_ids = st.from_regex(r"\A[A-Za-z0-9\-.]{1,64}\Z")
ids = often(fhir_ids, st.one_of(hostile_text, st.just(".."), st.text(min_size=65, max_size=70)), 4)
types = often(st.sampled_from(TYPES), hostile_text, 6)
references = st.one_of(st.builds(lambda t, i: f"{t}/{i}", types, ids),
                       st.builds(lambda t, i, v: f"https://ehr.example/fhir/{t}/{i}/_history/{v}", types, ids, ids),
                       hostile_text, st.just("urn:uuid:0"))
resource = shaped({"resourceType": types, "id": ids},
                  {"meta": shaped({"versionId": ids}), "status": st.sampled_from(["booked", "final", "cancelled"])})
entry = shaped({}, {"fullUrl": references, "resource": resource,
                    "request": shaped({"url": references, "method": st.sampled_from(["PUT", "POST", "DELETE"])})})
event_numbers = st.one_of(huge_ints, huge_ints.map(str), hostile_text)
notification_event = shaped({"eventNumber": event_numbers}, {"focus": shaped({"reference": references}),
                                                             "timestamp": hostile_text})
status_types = st.sampled_from(["event-notification", "heartbeat", "handshake", "query-status"])
subscription_status = shaped({"resourceType": st.just("SubscriptionStatus"), "type": status_types},
                             {"status": st.just("active"), "subscription": shaped({"reference": references}),
                              "topic": hostile_text, "eventsSinceSubscriptionStart": event_numbers,
                              "notificationEvent": some(notification_event)})
part = st.one_of(
    st.fixed_dictionaries({"name": st.just("event-number"), "valueString": event_numbers.map(str)}),
    st.fixed_dictionaries({"name": st.just("focus"), "valueReference": shaped({"reference": references})}))
parameters = shaped({"resourceType": st.just("Parameters"), "parameter": some(st.one_of(
    st.fixed_dictionaries({"name": st.just("type"), "valueCode": status_types}),
    st.fixed_dictionaries({"name": st.just("subscription"), "valueReference": shaped({"reference": references})}),
    st.fixed_dictionaries({"name": st.just("events-since-subscription-start"), "valueString": event_numbers.map(str)}),
    st.fixed_dictionaries({"name": st.just("notification-event"), "part": some(part)})))})
backport_entry = st.one_of(subscription_status, parameters).map(lambda status: {"resource": status})
bundle = shaped({"resourceType": st.just("Bundle"), "type": st.sampled_from(["history", "history", "searchset"])},
                {"entry": st.one_of(some(entry), st.tuples(backport_entry, st.lists(entry, max_size=2))
                                    .map(lambda pair: [pair[0], *pair[1]]))})
bodies = often(with_deep_part(st.one_of(resource, bundle)).map(encode),
               st.one_of(st.just(b""), st.binary(max_size=100)), 10)
keys = often(st.sampled_from(["appointment", "diagnostic-report"]), hostile_text, 10)
# (method, path) for the three URL forms; path parts may be anything (percent-encoded).
targets = st.one_of(
    keys.map(lambda key: ("POST", f"/ehr/notify/{quote(key, safe='')}")),
    st.tuples(st.sampled_from(["PUT", "POST"]), keys, types, ids).map(
        lambda t: (t[0], "/ehr/notify/" + "/".join(quote(part.encode("utf-8", "surrogatepass"), safe="")
                                                    for part in t[1:]))))


@FUZZ_SETTINGS
@given(target=targets, body=bodies, content_type=often(st.just("application/fhir+json"),
                                                       st.sampled_from(["application/json", "text/plain", ""]), 6))
def test_a_notification_with_the_right_secret_never_gets_a_server_error(service: Running, target: tuple[str, str],
                                                                         body: bytes, content_type: str) -> None:
    method, path = target
    key = path.split("/")[3]
    headers = {**service.ehr_headers(key if key in ("appointment", "diagnostic-report") else "appointment"),
               "Content-Type": content_type}
    response = service.http.request(method, path, content=body, headers=headers)
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])


def test_a_valid_notification_is_accepted_after_the_fuzzing(service: Running) -> None:
    appointment: dict[str, Any] = {"resourceType": "Appointment", "id": "fuzz-after-1", "meta": {"versionId": "1"},
                                   "status": "booked"}
    response = service.http.post("/ehr/notify/appointment", content=encode(appointment), headers=service.ehr_headers())
    assert response.status_code == 200, response.text
    assert "Accepted 1" in response.json()["issue"][0]["diagnostics"]
    service.assert_serving()
