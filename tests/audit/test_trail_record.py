"""Audit entries commit and roll back with the action they record, and the tables are insert-only."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from adapter.audit.tables import AuditEvent, AuditPending
from adapter.audit.trail import Action, AuditDetailError, AuditEntry, Kind, record
from adapter.storage.db import transaction


def _entry(patient: str = "Patient/example-1") -> AuditEntry:
    return AuditEntry(kind=Kind.PATIENT_READ, action=Action.READ, patient_ref=patient,
                      entity_ref="Appointment/example-9/_history/2", detail={"status": "booked"})


def test_an_entry_commits_with_its_transaction_and_is_queued_for_chaining(engine: Engine) -> None:
    with transaction(engine) as session:
        ids = record(session, _entry(), _entry("Patient/example-2"))
    with transaction(engine) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
        pending = session.exec(select(AuditPending.event_id)).all()
    assert [event.id for event in events] == ids
    assert [event.patient_ref for event in events] == ["Patient/example-1", "Patient/example-2"]
    assert sorted(pending) == sorted(ids)
    assert events[0].detail == '{"status":"booked"}'


def test_entries_recorded_together_get_their_ids_in_entry_order(engine: Engine) -> None:
    entries = [AuditEntry(Kind.PATIENT_READ, Action.READ, entity_ref=f"Patient/{n}") for n in range(5)]
    with transaction(engine) as session:
        record(session, AuditEntry(Kind.ADMIN, Action.UPDATE))  # ids that are not 1..5
        ids = record(session, *entries)
    with transaction(engine) as session:
        refs = {row.id: row.entity_ref for row in session.exec(select(AuditEvent))}
        pending = set(session.exec(select(AuditPending.event_id)))
    assert [refs[event_id] for event_id in ids] == [entry.entity_ref for entry in entries]
    assert set(ids) <= pending


def test_an_entry_rolls_back_with_its_transaction(engine: Engine) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as session:
        record(session, _entry())
        raise RuntimeError("the audited action failed")
    with transaction(engine) as session:
        assert session.exec(select(AuditEvent)).all() == []


def test_detail_refuses_phone_numbers_and_free_text(engine: Engine) -> None:
    with pytest.raises(AuditDetailError), transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.INBOUND, action=Action.CREATE, detail={"from": "+1 555 0100 123"}))
    with pytest.raises(AuditDetailError), transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.INBOUND, action=Action.CREATE, detail={"text": "x" * 200}))
    with transaction(engine) as session:  # dates and instants are not phone numbers
        record(session, AuditEntry(kind=Kind.RETENTION, action=Action.DELETE,
                                   detail={"older_than": "2026-11-25", "at": "2026-11-25T00:00:00+00:00"}))


@pytest.mark.parametrize("statement", ["UPDATE audit_event SET outcome = '8'", "DELETE FROM audit_event"])
def test_audit_rows_cannot_be_updated_or_deleted(engine: Engine, statement: str) -> None:
    with transaction(engine) as session:
        record(session, _entry())
    with pytest.raises(DBAPIError, match="insert-only"), engine.begin() as connection:
        connection.execute(text(statement))
    with transaction(engine) as session:
        assert [event.outcome for event in session.exec(select(AuditEvent)).all()] == ["0"]
