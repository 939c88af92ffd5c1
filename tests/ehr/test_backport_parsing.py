"""One code path for Backport notification status: R4 ``Parameters`` (kebab-case and camelCase
names), R4B and R5 ``SubscriptionStatus`` give the same items and status; event-number arithmetic
per gap-detection mode; the settings refuse what a hospital admin could get wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter.feeds.inbox import dedupe_key
from adapter.settings import Settings
from ehr.backport import BackportSpec, build_subscription, supports_events
from ehr.backport_events import BackportNotification, EventCursor, event_numbers, parse_status
from ehr.intake_parsing import NotificationRejected, parse_with_status

BASE = "http://ehr.example/fhir"
TOPIC = "http://example.org/topic/appointment-booked"


def r4(*, camel: bool = False, kind: str = "event-notification") -> dict[str, Any]:
    def name(kebab: str) -> str:
        head, *rest = kebab.split("-")
        return head + "".join(part.title() for part in rest) if camel else kebab

    return {"resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/sub-1"}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
        {"name": name("events-since-subscription-start"), "valueString": "7"},
        {"name": name("notification-event"), "part": [
            {"name": name("event-number"), "valueString": "7"},
            {"name": "timestamp", "valueInstant": "2026-01-02T03:04:05Z"},
            {"name": "focus", "valueReference": {"reference": f"{BASE}/Appointment/example-7"}}]}]}


def subscription_status(version: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
        "eventsSinceSubscriptionStart": "7" if version == "R4B" else 7,
        "notificationEvent": [{"eventNumber": "7" if version == "R4B" else 7,
                               "timestamp": "2026-01-02T03:04:05Z",
                               "focus": {"reference": f"{BASE}/Appointment/example-7"}}],
        "subscription": {"reference": f"{BASE}/Subscription/sub-1"}, "topic": TOPIC}
    return status


def bundle(status: dict[str, Any]) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "history",
                       "entry": [{"fullUrl": "urn:uuid:s", "resource": status}]}).encode()


@pytest.mark.parametrize("status", [r4(camel=True), subscription_status("R4B"), subscription_status("R5")],
                         ids=["r4-camel", "r4b", "r5"])
def test_every_status_shape_parses_like_r4_parameters(status: dict[str, Any]) -> None:
    expected_items, expected_status = parse_with_status(bundle(r4()), key="bp-appointment")
    items, parsed = parse_with_status(bundle(status), key="bp-appointment")
    assert parsed == expected_status
    assert parsed is not None and (parsed.subscription_id, parsed.events_since_start, parsed.type) == (
        "sub-1", 7, "event-notification")
    assert items == expected_items
    item = items[0]
    assert isinstance(item, BackportNotification) and (item.resource_id, item.event_number) == ("example-7", 7)
    assert dedupe_key(item) == "bp:bp-appointment:sub-1:7:7:Appointment/example-7"


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
def test_handshake_and_heartbeat_store_nothing_but_report_status(kind: str) -> None:
    items, status = parse_with_status(bundle(r4(kind=kind)), key="bp-appointment")
    assert items == [] and status is not None and status.type == kind


def test_a_focus_that_is_not_a_reference_is_refused() -> None:
    status = subscription_status("R5")
    status["notificationEvent"][0]["focus"] = {"reference": "urn:uuid:123"}
    with pytest.raises(NotificationRejected) as refused:
        parse_with_status(bundle(status), key="bp-appointment")
    assert refused.value.status == 400


def test_event_numbers_per_mode() -> None:
    status = parse_status(r4())
    assert event_numbers(status, "events-since-start") == [7]
    assert event_numbers(status, "per-bundle") == [7]
    assert event_numbers(status, "off") == []
    no_numbers = parse_status({"resourceType": "SubscriptionStatus", "type": "event-notification",
                               "eventsSinceSubscriptionStart": "9", "notificationEvent": [{}, {}]})
    assert event_numbers(no_numbers, "events-since-start") == [8, 9]  # counted back from the total


def test_the_cursor_finds_gaps_and_closes_them() -> None:
    cursor = EventCursor(0).seen([1, 2])
    assert (cursor.last, cursor.has_gap) == (2, False)
    cursor = cursor.seen([5])
    assert cursor.has_gap and cursor.missing() == (3, 4) and cursor.highest == 5
    cursor = cursor.seen([2, 3, 4])  # a late 3 and 4 close it; 2 is a repeat
    assert (cursor.last, cursor.pending) == (5, ())
    assert cursor.behind(6) and not cursor.behind(5)
    gap = cursor.seen([9])
    assert gap.caught_up(None) == EventCursor(9) and gap.caught_up(12) == EventCursor(12)
    assert EventCursor.decode(gap.last, gap.encode_pending()) == gap


def test_the_subscription_resource_follows_the_backport_profile() -> None:
    spec = BackportSpec("bp-appointment", TOPIC, "Appointment", "full-resource", 30, 20, 5,
                        ("Appointment?actor=Location/1",))
    sub = build_subscription(spec, "https://bridge.example/ehr/notify/bp-appointment", "Authorization: Bearer x")
    assert sub["criteria"] == TOPIC and sub["status"] == "requested"
    assert sub["_criteria"]["extension"][0]["valueString"] == "Appointment?actor=Location/1"
    assert {e["url"].rsplit("/", 1)[1]: e["valueUnsignedInt"] for e in sub["channel"]["extension"]} == {
        "backport-heartbeat-period": 30, "backport-timeout": 20, "backport-max-count": 5}
    assert sub["channel"]["_payload"]["extension"][0]["valueCode"] == "full-resource"
    with pytest.raises(ValueError, match="canonical URL"):
        BackportSpec("bp-appointment", "Appointment?status=booked", "Appointment")


def test_events_operation_is_read_from_the_capability_statement() -> None:
    with_events = {"rest": [{"resource": [{"type": "Subscription", "operation": [{"name": "events"}]}]}]}
    assert supports_events(with_events) and not supports_events({"rest": [{"resource": [{"type": "Subscription"}]}]})


def test_settings_refuse_bad_topics() -> None:
    good = Settings(mode="demo", backport_topics={"Appointment": TOPIC})
    assert good.backport_topics == {"Appointment": TOPIC}
    with pytest.raises(ValueError, match="canonical URL"):
        Settings(mode="demo", backport_topics={"Appointment": "Appointment?status=booked"})
    with pytest.raises(ValueError, match="not a FHIR resource type"):
        Settings(mode="demo", backport_topics={"appointments": TOPIC})
