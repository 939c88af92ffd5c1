"""Shared by the chain, checkpoint, verify and purge tests: synthetic audit entries, and tampering
behind the application's back (the triggers switched off as the database owner would)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine

from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.storage.db import transaction


def entry(patient: str = "Patient/example-1", n: int = 0) -> AuditEntry:
    return AuditEntry(kind=Kind.PATIENT_READ, action=Action.READ, patient_ref=patient,
                      entity_ref=f"Appointment/example-{n}/_history/1", detail={"status": "booked"})


def record_events(engine: Engine, count: int, *, patient: str = "Patient/example-1",
                  at: datetime | None = None) -> list[int]:
    with transaction(engine) as session:
        return record(session, *(entry(patient, n) for n in range(count)), at=at)


def tamper(engine: Engine, *statements: str) -> None:
    """Runs ``statements`` with the audit triggers out of the way (SQLite: dropped; PostgreSQL:
    disabled for the transaction, as the tables' owner can)."""
    tables = ("audit_event", "audit_chain", "audit_checkpoint", "audit_purge")
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for table in tables:
                connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
                connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
        else:
            for table in tables:
                connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER ALL"))
        for statement in statements:
            connection.execute(text(statement))
        if engine.dialect.name != "sqlite":
            for table in tables:
                connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER ALL"))


def blob(engine: Engine, data: bytes) -> str:
    """A binary literal for :func:`tamper`'s raw SQL."""
    return f"x'{data.hex()}'" if engine.dialect.name == "sqlite" else f"'\\x{data.hex()}'::bytea"
