"""The notification endpoint, in process (httpx ASGITransport) with an in-memory sink."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ehr.hook_secrets import derive_secret
from ehr.intake import build_intake_router
from ehr.intake_parsing import DEFAULT_SUPPORTED_TYPES
from ehr.notifications import IncomingNotification
from tests.support.examples import EXAMPLES_DIR
from tests.support.fakes import InMemoryNotificationSink
from tests.support.synthetic import PATIENT_NAME, synthetic_appointment, synthetic_diagnostic_report

MASTER = b"synthetic-master-secret-for-tests"
KEYS = ("appointment", "diagnostic-report")
CAP = 4096
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def auth(key: str = "appointment") -> dict[str, str]:
    return {"Authorization": f"Bearer {derive_secret(MASTER, key)}", **FHIR_JSON}


def ref(type_: str, id_: str, version: str | None = None, key: str = "appointment") -> IncomingNotification:
    return IncomingNotification(key, "resource", type_, id_, version)


def appointment(id_: str = "a1", version: str | None = "3") -> dict[str, Any]:
    resource = synthetic_appointment("Patient/p1", appointment_id=id_)
    if version:
        resource["meta"]["versionId"] = version
    return resource


def encode(resource: Any) -> bytes:
    return json.dumps(resource).encode()


def bundle_of(*entries: dict[str, Any]) -> bytes:
    return encode({"resourceType": "Bundle", "type": "transaction", "entry": list(entries)})


class Intake:
    def __init__(self, supported_types: frozenset[str] = DEFAULT_SUPPORTED_TYPES, cap: int = CAP) -> None:
        self.sink = InMemoryNotificationSink()
        app = FastAPI()
        app.include_router(build_intake_router(self.sink, MASTER, KEYS, cap, supported_types))
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge.test")


@pytest.fixture
async def intake() -> AsyncIterator[Intake]:
    built = Intake()
    async with built.http:
        yield built


def assert_outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


# --- delivery forms -----------------------------------------------------------------------


async def test_an_empty_post_is_a_ping(intake: Intake) -> None:
    response = await intake.http.post("/ehr/notify/appointment", headers=auth())
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [IncomingNotification("appointment", "ping")]


async def test_a_posted_resource_becomes_a_reference(intake: Intake) -> None:
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(appointment()))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [ref("Appointment", "a1", "3")]


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_a_resource_sent_to_type_and_id(intake: Intake, method: str) -> None:
    body = appointment(version="2")
    del body["id"]  # the URL names it
    response = await intake.http.request(method, "/ehr/notify/appointment/Appointment/a7", headers=auth(),
                                         content=encode(body))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [ref("Appointment", "a7", "2")]


async def test_an_empty_put_to_type_and_id_is_a_reference(intake: Intake) -> None:
    response = await intake.http.put("/ehr/notify/diagnostic-report/DiagnosticReport/r1",
                                     headers=auth("diagnostic-report"))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [ref("DiagnosticReport", "r1", key="diagnostic-report")]


@pytest.mark.parametrize("url", ["/ehr/notify/appointment/Appointment/other", "/ehr/notify/appointment/Encounter/a1"])
async def test_url_and_body_must_agree(intake: Intake, url: str) -> None:
    response = await intake.http.put(url, headers=auth(), content=encode(appointment("a1")))
    assert_outcome(response, 400, "invalid")
    assert intake.sink.calls == 0


async def test_a_transaction_bundle_with_a_mix_of_entries(intake: Intake) -> None:
    report = synthetic_diagnostic_report("Patient/p1", status="amended", report_id="r1")
    report["meta"]["versionId"] = "5"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "https://ehr.example/fhir/Appointment/a1", "resource": appointment("a1", "3"),
         "request": {"method": "PUT", "url": "Appointment/a1"}},
        {"fullUrl": "urn:uuid:5f2b", "resource": report, "request": {"method": "PUT", "url": "DiagnosticReport/r1"}},
        {"fullUrl": "https://ehr.example/fhir/Appointment/a2/_history/9"},
        {"request": {"method": "DELETE", "url": "Appointment/a3"}},
    ]}
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(bundle))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [
        ref("Appointment", "a1", "3"), ref("DiagnosticReport", "r1", "5"),
        ref("Appointment", "a2", "9"), ref("Appointment", "a3"),
    ]


async def test_a_history_bundle_keeps_each_version(intake: Intake) -> None:
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": appointment("a1", "1")}, {"resource": appointment("a1", "2")},
        {"resource": appointment("a1", None)},
    ]}
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(bundle))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [ref("Appointment", "a1", "1"), ref("Appointment", "a1", "2")]


# --- R4 Subscriptions Backport notification bundles ----------------------------------------


def example(name: str) -> bytes:
    return (EXAMPLES_DIR / f"backport__{name}.json").read_bytes()


@pytest.mark.parametrize("name", ["id_only_notification_bundle_example", "full_resource_notification_bundle_example"])
async def test_backport_event_notifications(name: str) -> None:
    built = Intake(DEFAULT_SUPPORTED_TYPES | {"Encounter"})
    async with built.http:
        response = await built.http.post("/ehr/notify/appointment", headers=auth(), content=example(name))
    assert_outcome(response, 200, "informational")
    assert built.sink.received == [ref("Encounter", "86009987-eabe-42bf-8c02-b112b18cb616")]


async def test_a_backport_focus_of_an_unsupported_type_is_refused(intake: Intake) -> None:
    body = example("id_only_notification_bundle_example")  # its focus is an Encounter
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=body)
    assert_outcome(response, 422, "not-supported")
    assert intake.sink.calls == 0


async def test_a_backport_empty_notification_is_a_ping(intake: Intake) -> None:
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(),
                                      content=example("empty_notification_bundle_example"))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [IncomingNotification("appointment", "ping")]


@pytest.mark.parametrize("name", ["heartbeat_bundle_example", "handshake_bundle_example"])
async def test_backport_handshakes_and_heartbeats_store_nothing(intake: Intake, name: str) -> None:
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=example(name))
    assert_outcome(response, 200, "informational")
    assert intake.sink.calls == 0


async def test_an_r4b_subscription_status_bundle(intake: Intake) -> None:
    status = {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
              "notificationEvent": [{"eventNumber": "4", "focus": {"reference": "Appointment/a5"}}]}
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"text": PATIENT_NAME}]}  # context: ignored
    report = synthetic_diagnostic_report(report_id="r9")  # context too, though a type we accept
    focus = {"fullUrl": "https://ehr.example/fhir/Appointment/a5", "resource": appointment("a5", "2")}
    entries = [{"resource": status}, focus, {"resource": patient}, {"resource": report}]
    bundle = {"resourceType": "Bundle", "type": "history", "entry": entries}
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(bundle))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [ref("Appointment", "a5", "2")]


async def test_a_backport_bundle_without_focus_yields_the_supported_entries(intake: Intake) -> None:
    status = {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification"}
    patient = {"resourceType": "Patient", "id": "p1"}
    bundle = {"resourceType": "Bundle", "type": "history",
              "entry": [{"resource": status}, {"resource": appointment("a6", "1")}, {"resource": patient}]}
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(bundle))
    assert_outcome(response, 200, "informational")
    assert intake.sink.received == [ref("Appointment", "a6", "1")]


# --- refusals: nothing is stored ----------------------------------------------------------


class ObservedBody:
    """A request body that records whether the server started reading it."""

    def __init__(self, data: bytes = b"{}") -> None:
        self.data = data
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.data


async def test_an_unknown_key_is_not_found(intake: Intake) -> None:
    response = await intake.http.post("/ehr/notify/patients", headers=auth("patients"), content=b"{}")
    assert_outcome(response, 404, "not-found")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "login"),
        ({"Authorization": f"Bearer {derive_secret(MASTER, 'diagnostic-report')}"}, 403, "forbidden"),
        ({"Authorization": f"Basic {derive_secret(MASTER, 'appointment')}"}, 403, "forbidden"),
        ({"Authorization": "Bearer "}, 403, "forbidden"),
    ],
    ids=["missing", "other-keys-secret", "wrong-scheme", "empty"],
)
async def test_a_missing_or_wrong_secret_is_refused_before_the_body_is_read(
    intake: Intake, headers: dict[str, str], status: int, code: str
) -> None:
    body = ObservedBody(encode(appointment()))
    response = await intake.http.post("/ehr/notify/appointment", headers={**headers, **FHIR_JSON}, content=body)
    assert_outcome(response, status, code)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not body.read
    assert intake.sink.calls == 0


async def test_a_declared_length_over_the_cap_is_refused_unread(intake: Intake) -> None:
    body = ObservedBody(b"x" * (CAP + 1))
    headers = {**auth(), "Content-Length": str(CAP + 1)}
    response = await intake.http.post("/ehr/notify/appointment", headers=headers, content=body)
    assert_outcome(response, 413, "too-costly")
    assert not body.read
    assert intake.sink.calls == 0


async def test_a_chunked_body_over_the_cap_is_refused(intake: Intake) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(CAP // 512 + 2):
            yield b" " * 512

    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=chunks())
    assert_outcome(response, 413, "too-costly")
    assert intake.sink.calls == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"resourceType": "Appointment", "id": ', 400, "structure"),
        (b"\xff\xfe not utf", 400, "structure"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "structure"),
        (b'["Appointment"]', 400, "structure"),
        (b'{"id": "a1", "status": "booked"}', 400, "structure"),
        (encode({**appointment(), "id": "../../Patient/1"}), 400, "invalid"),
        (encode({"resourceType": "Appointment", "status": "booked"}), 400, "invalid"),
        (encode({"resourceType": "Patient", "id": "p1", "name": [{"text": PATIENT_NAME}]}), 422, "not-supported"),
        (bundle_of({"resource": appointment()}, {"resource": {"resourceType": "Patient", "id": "p1"}}),
         422, "not-supported"),
        (bundle_of({"resource": appointment()}, {"fullUrl": "urn:uuid:1", "request": {"url": "Appointment"}}),
         400, "invalid"),
        (encode({"resourceType": "Bundle", "type": "collection", "entry": {"resource": appointment()}}),
         400, "structure"),
    ],
    ids=["truncated-json", "not-utf8", "nested-too-deep", "array", "no-resource-type", "bad-id", "no-id",
         "unsupported-type", "bundle-with-unsupported-entry", "bundle-entry-without-id", "entry-not-a-list"],
)
async def test_invalid_bodies_are_refused_whole(body: bytes, status: int, code: str) -> None:
    roomy = Intake(cap=1_000_000)  # the deeply nested body is larger than the usual test cap
    async with roomy.http:
        response = await roomy.http.post("/ehr/notify/appointment", headers=auth(), content=body)
    assert_outcome(response, status, code)
    assert roomy.sink.calls == 0
    assert PATIENT_NAME not in response.text


async def test_a_body_that_is_not_json_by_content_type_is_refused(intake: Intake) -> None:
    headers = {**auth(), "Content-Type": "application/fhir+xml"}
    response = await intake.http.post("/ehr/notify/appointment", headers=headers, content=b"<Appointment/>")
    assert_outcome(response, 415, "not-supported")


async def test_a_failing_sink_makes_the_ehr_retry(intake: Intake) -> None:
    intake.sink.fail_with = RuntimeError("database is down")
    response = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(appointment()))
    assert_outcome(response, 503, "transient")
    assert response.headers["Retry-After"] == "5"
    assert "database" not in response.text

    intake.sink.fail_with = None
    retried = await intake.http.post("/ehr/notify/appointment", headers=auth(), content=encode(appointment()))
    assert_outcome(retried, 200, "informational")
    assert intake.sink.received == [ref("Appointment", "a1", "3")]


async def test_other_methods_are_not_allowed(intake: Intake) -> None:
    response = await intake.http.get("/ehr/notify/appointment", headers=auth())
    assert response.status_code == 405
