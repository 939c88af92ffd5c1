"""The inbox on SQLite and PostgreSQL: durable, deduplicated by version, claimable once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event
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


def test_several_requests_share_one_transaction_and_a_bad_one_fails_alone(engine: Engine) -> None:
    inbox = InboxStore(engine)
    commits: list[int] = []

    def count(_connection: object) -> None:
        commits.append(1)

    event.listen(engine, "commit", count)
    try:
        # Request two repeats request one's version: new once, for the first request that carried it.
        assert inbox.accept_groups([[note("1")], [note("2"), note("1")], [note("3")]]) == [1, 1, 1]
    finally:
        event.remove(engine, "commit", count)
    assert len(commits) == 1  # one transaction for three requests
    bad = IncomingNotification(subscription_key="appointment", kind=None, resource_type="Appointment",  # type: ignore[arg-type]
                               resource_id="a9", version_id="1")
    outcomes = inbox.accept_groups([[note("4")], [bad], [note("5"), note("4")]])
    assert outcomes[0] == 1 and isinstance(outcomes[1], Exception) and outcomes[2] == 1  # stored alone
    assert len(inbox.claim(10)) == 5
