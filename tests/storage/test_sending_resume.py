"""Resuming sending makes due now exactly the rows the pause held, on SQLite and PostgreSQL; every other
queued row keeps its time (the end-to-end run through the emulator and the CLI is in
tests/integration/test_sending_resume.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.outbox.circuit_breaker import pause_sending, resume_sending, sending_paused
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import transaction, utcnow
from tests.support.stores import outbox_store

TEMPLATE = {"name": "service_update", "language": {"code": "en_US"}}
# key → (state, last error class, due in): what a pause leaves behind, and what it must not touch.
ROWS = {
    "refused": ("queued", "AccountBlockedError", timedelta(seconds=50)),  # Meta's account-level refusal
    "unsent": ("queued", "SendingPaused", timedelta(seconds=50)),  # its batch, left unsent
    "failed-status": ("queued", "AccountBlockedError", timedelta(seconds=20)),  # a failed status said so
    "came-due": ("queued", None, timedelta(seconds=-30)),  # due during the pause: already due
    "transient": ("queued", "RetryableError", timedelta(seconds=40)),  # its own backoff
    "quiet-hours": ("queued", None, timedelta(hours=9)),  # a reminder moved out of the night
    "paced": ("queued", None, timedelta(seconds=4)),  # one message per 6 s to this patient
    "earlier-pause": ("queued", "SendingPaused", timedelta(hours=3)),  # deferred since by the claim's rules
    "sent": ("sent", "AccountBlockedError", timedelta(seconds=50)),
}


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_resume_brings_the_held_rows_due_now_and_leaves_every_other_time_alone(engine: Engine) -> None:
    store, start = outbox_store(engine), utcnow()
    with transaction(engine) as session:
        for n, (key, (_, _, due_in)) in enumerate(ROWS.items()):
            store.enqueue(session, natural_key=key, rule_id="test", resource_ref="Appointment/r", patient_ref=f"P/{n}",
                          recipient=f"+120155501{n:02d}", template=TEMPLATE, due_at=start + due_in)
        for found in session.exec(select(OutboxMessage)):
            found.state, found.last_error_class = ROWS[found.natural_key][0], ROWS[found.natural_key][1]
            session.add(found)
        pause_sending(session, "AccountBlockedError code=131031: Account locked")
    before = {key: aware(row.due_at) for key, row in _rows(engine).items()}

    assert resume_sending(engine) and sending_paused(engine) is None
    after = {key: aware(row.due_at) for key, row in _rows(engine).items()}
    moved = {key for key in ROWS if after[key] != before[key]}
    assert moved == {"refused", "unsent", "failed-status"}
    assert all(start <= after[key] <= utcnow() for key in moved)
    assert resume_sending(engine) is False  # not paused: nothing to do


def _rows(engine: Engine) -> dict[str, OutboxMessage]:
    with Session(engine) as session:
        return {row.natural_key: row for row in session.exec(select(OutboxMessage))}
