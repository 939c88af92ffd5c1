"""The decide step over a batch of resource versions, on SQLite and PostgreSQL: one read and one write
per table for the whole batch (the statement count does not grow with its size), and the batch
behaves as the same versions decided one by one — a second version of one resource is a duplicate,
one patient's two appointments share the same-day reminder rule, one number serves two patients."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.feeds.tables import InboxEvent, ResourceState
from adapter.outbox.tables import ActionToken, OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.recipients.tables import WhatsAppContact
from adapter.scheduling.decision import DecideItem
from adapter.storage.db import transaction, utcnow
from tests.storage.test_reminders import REMINDER_RULE, appointment, decider, local, skip_reasons
from tests.support.synthetic import synthetic_appointment, synthetic_patient

CONFIRMATION = "appointment-booked-confirmation"


@contextmanager
def counting(engine: Engine) -> Iterator[Counter[str]]:
    """Counts the statements sent to the database, by first keyword."""
    counts: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counts[statement.lstrip().split(None, 1)[0].upper()] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", count)


def booked(number: int) -> DecideItem:
    """A booked appointment of its own patient (own number), three days ahead, version 1."""
    patient_ref = f"Patient/b{number}"
    resource = synthetic_appointment(patient_ref, appointment_id=f"b{number}", start=local(3, 11))
    resource["meta"] = {"versionId": "1", "lastUpdated": "2026-11-25T10:00:00Z"}
    return DecideItem(resource, synthetic_patient(number=number, patient_id=f"b{number}"))


def inbox_events(engine: Engine, count: int) -> list[int]:
    now = utcnow()
    with transaction(engine) as session:
        rows = [InboxEvent(dedupe_key=f"e{n}", kind="resource", subscription_key="ehr", resource_type="Appointment",
                           resource_id=f"b{n}", version_id="1", state="pending", attempts=1, next_attempt_at=now,
                           received_at=now) for n in range(count)]
        session.add_all(rows)
        session.flush()
        return [row.id or 0 for row in rows]


def decide_batch(engine: Engine, size: int, offset: int) -> Counter[str]:
    d = decider(engine)
    items = [booked(offset + n) for n in range(size)]
    with transaction(engine) as session:
        for item in items:
            set_consent(session, f"Patient/b{item.resource['id'][1:]}", OPTED_IN, "admin")
    with counting(engine) as counts:
        decisions = d.record_batch(items)
    assert all(len(decision.queued) == 3 for decision in decisions)  # confirmation + two reminders
    return counts


def test_a_batch_costs_the_same_number_of_statements_whatever_its_size(engine: Engine) -> None:
    small = decide_batch(engine, 3, 0)
    large = decide_batch(engine, 20, 10)
    assert small == large, (small, large)
    assert sum(large.values()) <= 16  # reads and writes, one per table (a constant, not per row)
    with Session(engine) as session:
        assert len(session.exec(select(OutboxMessage)).all()) == 3 * 23
        assert len(session.exec(select(ActionToken)).all()) == 4 * 23  # confirm, reschedule, cancel, staff buttons
        assert len(session.exec(select(WhatsAppContact)).all()) == 23
        assert len(session.exec(select(ResourceState)).all()) == 23


def test_the_batch_finishes_its_inbox_events_and_audits_every_read(engine: Engine) -> None:
    d = decider(engine)
    ids = inbox_events(engine, 4)
    items = [DecideItem(booked(n).resource, booked(n).patient, ids[n]) for n in range(3)]
    d.record_batch(items, done_events=[ids[3]])  # the fourth led to nothing (deleted in the EHR)
    with Session(engine) as session:
        assert {row.state for row in session.exec(select(InboxEvent))} == {"done"}
        reads = session.exec(select(AuditEvent.entity_ref).where(col(AuditEvent.kind) == "patient-read")).all()
    assert sorted(reads) == sorted([f"Appointment/b{n}/_history/1" for n in range(3)]
                                   + [f"Patient/b{n}" for n in range(3)])


def test_a_second_version_of_one_resource_in_the_batch_sees_the_first(engine: Engine) -> None:
    d = decider(engine)
    first = appointment(local(4, 15), 1)
    decisions = d.record_batch([DecideItem(first, synthetic_patient(number=42, patient_id="p1")),
                                DecideItem(first, synthetic_patient(number=42, patient_id="p1"))])
    assert not decisions[0].duplicate and len(decisions[0].queued) == 3
    assert decisions[1].duplicate and decisions[1].queued == []


def test_one_patients_two_appointments_in_one_batch_get_one_reminder_per_offset(engine: Engine) -> None:
    d = decider(engine)
    morning, afternoon = appointment(local(4, 9), 1, "a1"), appointment(local(4, 16), 1, "a2")
    patient = synthetic_patient(number=42, patient_id="p1")
    decisions = d.record_batch([DecideItem(morning, patient), DecideItem(afternoon, patient)])
    assert len(decisions[0].queued) == 3  # confirmation and both reminders
    assert [key.split(":")[0] for key in decisions[1].queued] == [CONFIRMATION]
    assert skip_reasons(engine) == ["same_day_reminder"]
    with Session(engine) as session:
        reminders = session.exec(select(OutboxMessage).where(col(OutboxMessage.rule_id) == REMINDER_RULE)).all()
    assert {row.resource_ref for row in reminders} == {"Appointment/a1"}


def test_one_number_for_two_patients_in_one_batch_is_one_index(engine: Engine) -> None:
    d = decider(engine)
    items = []
    for name in ("c1", "c2"):  # a parent's phone: two patients, one number
        resource = synthetic_appointment(f"Patient/{name}", appointment_id=name, start=local(5, 11))
        resource["meta"] = {"versionId": "1"}
        items.append(DecideItem(resource, synthetic_patient(number=7, patient_id=name)))
    with transaction(engine) as session:
        for name in ("c1", "c2"):
            set_consent(session, f"Patient/{name}", OPTED_IN, "admin")
    d.record_batch(items)
    with Session(engine) as session:
        contacts = session.exec(select(WhatsAppContact)).all()
        keys = {row.recipient_key for row in session.exec(select(OutboxMessage))}
    assert sorted(row.patient_ref for row in contacts) == ["Patient/c1", "Patient/c2"]
    assert len({row.phone_index for row in contacts}) == 1 and keys == {contacts[0].phone_index}
