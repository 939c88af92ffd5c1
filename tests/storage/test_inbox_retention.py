"""Finished inbox events leave with the message retention period, on SQLite and PostgreSQL: done and
dead events older than the period go, in batches each audited with its rows; pending events stay
whatever their age; a second run removes nothing; a legal hold on everyone keeps them; and a
notification repeated after its event went is stored again (the pipeline's version check, on the
kept ``resource_state``, makes it a no-op)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent, LegalHold
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import InboxEvent
from adapter.maintenance.retention import RetentionPolicy, run_retention
from adapter.storage.db import table_of, transaction, utcnow
from ehr.notifications import IncomingNotification

NOW = utcnow()
POLICY = RetentionPolicy(link_days=30, message_days=90, batch_size=2)
EDGE = NOW - timedelta(days=POLICY.message_days)
HOUR = timedelta(hours=1)


def event(engine: Engine, key: str, state: str, received_at: datetime, processed_at: datetime | None) -> None:
    with engine.begin() as connection:
        connection.execute(insert(table_of(InboxEvent)).values(
            dedupe_key=key, kind="resource", subscription_key="ehr", resource_type="Appointment",
            resource_id=key, version_id="1", state=state, attempts=1, next_attempt_at=received_at,
            received_at=received_at, processed_at=processed_at))


def keys(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(InboxEvent.dedupe_key)).all())


def inbox_purges(engine: Engine) -> list[dict[str, object]]:
    with Session(engine) as session:
        details = session.exec(select(AuditEvent.detail).where(col(AuditEvent.kind) == "retention")
                               .order_by(col(AuditEvent.id))).all()
    return [entry for entry in (json.loads(detail or "{}") for detail in details) if entry["category"] == "inbox_event"]


def fill(engine: Engine) -> None:
    old, recent = EDGE - HOUR, EDGE + HOUR
    event(engine, "done-old", "done", old, old)
    event(engine, "done-old-2", "done", old - HOUR, old)
    event(engine, "dead-old", "dead", old, None)  # the pipeline gave up: no processed_at
    event(engine, "done-recent", "done", recent, recent)
    event(engine, "done-late", "done", old, recent)  # re-driven, processed inside the period
    event(engine, "dead-recent", "dead", recent, None)
    event(engine, "pending-old", "pending", old, None)  # in flight (a retry, a re-drive): stays


def test_finished_events_older_than_the_period_go_in_audited_batches(engine: Engine) -> None:
    fill(engine)
    report = run_retention(engine, POLICY, now=NOW, actor="cli:tester")
    assert report.counts["inbox_event"] == 3
    assert keys(engine) == {"done-recent", "done-late", "dead-recent", "pending-old"}
    purges = inbox_purges(engine)
    assert [entry["rows"] for entry in purges] == [2, 1]  # one entry per batch, each with its rows
    assert len({entry["run"] for entry in purges}) == 1
    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester").counts["inbox_event"] == 0
    assert len(inbox_purges(engine)) == 2  # nothing found, nothing audited


def test_a_dry_run_counts_them_and_a_hold_on_everyone_keeps_them(engine: Engine) -> None:
    fill(engine)
    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester", dry_run=True).counts["inbox_event"] == 3
    with transaction(engine) as session:
        session.execute(insert(table_of(LegalHold)).values(patient_ref=None, reason="litigation", created_by="x",
                                                           created_at=NOW))
    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester").counts["inbox_event"] == 0
    assert len(keys(engine)) == 7


def test_a_repeat_after_the_purge_is_stored_again(engine: Engine) -> None:
    inbox = InboxStore(engine)
    notification = IncomingNotification(kind="resource", subscription_key="ehr", resource_type="Appointment",
                                        resource_id="1", version_id="1")
    assert inbox.accept([notification]) == 1
    [claimed] = inbox.claim(10)
    with transaction(engine) as session:
        InboxStore.mark_done(session, claimed.id or 0)
    assert inbox.accept([notification]) == 0  # the stored event dedupes the repeat
    run_retention(engine, POLICY, now=NOW + timedelta(days=POLICY.message_days + 1), actor="cli:tester")
    assert keys(engine) == set()
    # Gone from the inbox, the repeat is stored again: the pipeline's version check
    # (resource_state, kept) then makes it a no-op.
    assert inbox.accept([notification]) == 1 and len(inbox.claim(10)) == 1
