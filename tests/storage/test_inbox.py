"""The inbox on SQLite and PostgreSQL: durable, deduplicated by version, claimable once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from adapter.feeds.inbox import InboxStore
from ehr.notifications import IncomingNotification


def note(version: str | None = "1", kind: str = "resource") -> IncomingNotification:
    if kind == "ping":
        return IncomingNotification(subscription_key="appointment", kind="ping")
    return IncomingNotification(subscription_key="appointment", kind="resource", resource_type="Appointment",
                                resource_id="a1", version_id=version)


def test_same_version_is_stored_once_even_from_two_deliveries(engine: Engine) -> None:
    inbox = InboxStore(engine)
    assert inbox.accept([note("1"), note("1")]) == 1
    assert inbox.accept([note("1")]) == 0
    assert inbox.accept([note("2")]) == 1


def test_versionless_notifications_and_pings_are_all_kept(engine: Engine) -> None:
    inbox = InboxStore(engine)
    assert inbox.accept([note(None), note(None), note(kind="ping")]) == 3


def test_claim_leases_and_retry_later_returns_the_event(engine: Engine) -> None:
    inbox = InboxStore(engine)
    inbox.accept([note("1")])
    [event] = inbox.claim(10)
    assert inbox.claim(10) == []
    inbox.retry_later(event.id or 0, "FhirUnavailableError", timedelta(seconds=-1), max_attempts=5)
    [again] = inbox.claim(10)
    assert again.id == event.id and again.attempts == 2 and again.last_error == "FhirUnavailableError"


def test_event_dies_visibly_after_max_attempts(engine: Engine) -> None:
    inbox = InboxStore(engine)
    inbox.accept([note("1")])
    [event] = inbox.claim(10)
    inbox.retry_later(event.id or 0, "boom", timedelta(seconds=-1), max_attempts=1)
    assert inbox.claim(10) == []
    assert [dead.id for dead in inbox.dead_events()] == [event.id]
    assert "queued again" in inbox.redrive(event.id or 0)
    assert [again.id for again in inbox.claim(10)] == [event.id]
    assert "not dead" in inbox.redrive(event.id or 0)
