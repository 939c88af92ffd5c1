"""Claims read only claimable rows, whatever the history: with 20,000 finished inbox events, sent
outbox rows and future reminders stored, the statement each claim really issues is planned (EXPLAIN
on PostgreSQL, EXPLAIN QUERY PLAN on SQLite) as a read of its partial index in claim order: no scan
of the table, no sort of the due rows. A plan, not a timing: the speed itself is a benchmark's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import InboxEvent
from adapter.outbox.tables import OutboxMessage
from adapter.scheduling.decide import attach
from adapter.scheduling.decision import DecideItem
from adapter.service import build_service
from adapter.settings import load_settings
from adapter.storage.db import table_of, transaction, utcnow
from tests.support.stores import outbox_store
from tests.support.synthetic import synthetic_appointment, synthetic_patient

HISTORY = 20_000
NOW = utcnow()
TEMPLATE = {"name": "results_ready", "language": {"code": "en_US"}, "components": []}


def fill_history(engine: Engine) -> None:
    """Finished inbox events, sent outbox rows and reminders due next month, in bulk."""
    old = NOW - timedelta(days=3)
    inbox = [{"dedupe_key": f"Appointment/{n}/_history/1", "kind": "resource", "subscription_key": "ehr",
              "resource_type": "Appointment", "resource_id": str(n), "version_id": "1",
              "state": "dead" if n % 100 == 0 else "done", "attempts": 1, "next_attempt_at": old,
              "received_at": old, "processed_at": old} for n in range(HISTORY)]
    outbox = [{"natural_key": f"rule:{n}", "rule_id": "rule", "resource_ref": f"Appointment/{n}",
               "patient_ref": f"Patient/{n}", "state": "queued" if n % 4 == 0 else "sent",
               "due_at": NOW + timedelta(days=30) if n % 4 == 0 else old, "attempts": n % 4 and 1,
               "created_at": old, "updated_at": old, "purpose": "notify"} for n in range(HISTORY)]
    with engine.begin() as connection:
        connection.execute(insert(table_of(InboxEvent)), inbox)
        connection.execute(insert(table_of(OutboxMessage)), outbox)
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE inbox_event; ANALYZE outbox"))


def claim_statement(engine: Engine, claim: Callable[[], Any], table: str) -> tuple[str, Any]:
    """The SELECT the claim sends to the database for ``table``, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        claim()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert seen, f"the claim read nothing from {table}"
    return seen[0]


def plan(engine: Engine, statement: str, parameters: Any) -> str:
    explain = "EXPLAIN " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(explain + statement, parameters).all()
    return "\n".join(str(row[-1]) for row in rows)


def assert_reads_only(engine: Engine, found: str, index: str, table: str) -> None:
    if engine.dialect.name == "postgresql":
        assert f"Index Scan using {index} on {table}" in found, found
        assert "Seq Scan" not in found and "Sort" not in found and "Bitmap" not in found, found
    else:
        assert f"USING INDEX {index}" in found, found
        assert f"SCAN {table}\n" not in f"{found}\n" and "TEMP B-TREE" not in found, found


def test_the_inbox_claim_reads_only_pending_events(engine: Engine) -> None:
    fill_history(engine)
    inbox = InboxStore(engine)
    waiting = [{"dedupe_key": f"Patient/{n}/_history/2", "kind": "resource", "subscription_key": "ehr",
                "resource_type": "Patient", "resource_id": str(n), "version_id": "2", "state": "pending",
                "attempts": 0, "next_attempt_at": NOW - timedelta(seconds=1), "received_at": NOW} for n in range(3)]
    with engine.begin() as connection:
        connection.execute(insert(table_of(InboxEvent)), waiting)
    statement, parameters = claim_statement(engine, lambda: inbox.claim(2, now=NOW), "inbox_event")
    assert_reads_only(engine, plan(engine, statement, parameters), "ix_inbox_claimable", "inbox_event")
    # Same semantics: the oldest pending event is next, the leased ones wait for their lease.
    [third] = inbox.claim(10, now=NOW)
    assert third.resource_id == "2" and inbox.claim(10, now=NOW) == []
    assert [event.resource_id for event in inbox.claim(10, now=NOW + timedelta(minutes=6))] == ["0", "1", "2"]


def test_the_outbox_claim_reads_only_due_rows_in_due_order(engine: Engine) -> None:
    fill_history(engine)
    outbox = outbox_store(engine, pair_interval_seconds=0)
    with transaction(engine) as session:
        for n, seconds in enumerate((-5, -30, 3600)):  # due 5 s ago, 30 s ago, in an hour
            outbox.enqueue(session, natural_key=f"now:{n}", rule_id="rule", resource_ref=f"Appointment/x{n}",
                           patient_ref=f"Patient/x{n}", recipient="+12015550123", template=TEMPLATE,
                           due_at=utcnow() + timedelta(seconds=seconds))
    with Session(engine) as session:
        ids = dict(session.exec(select(OutboxMessage.natural_key, OutboxMessage.id)
                                .where(col(OutboxMessage.natural_key).startswith("now:"))).all())
    statement, parameters = claim_statement(engine, lambda: outbox.claim_due(1), "outbox")
    assert_reads_only(engine, plan(engine, statement, parameters), "ix_outbox_claimable", "outbox")
    # Same semantics: due order; a send whose lease expired (its instance died) is claimed again,
    # in due order among the due rows; the row due in an hour waits.
    assert [m.outbox_id for m in outbox.claim_due(10)] == [ids["now:0"]]  # now:1 went first, above
    later = utcnow() + timedelta(minutes=3)
    assert [m.outbox_id for m in outbox.claim_due(10, now=later)] == [ids["now:1"], ids["now:0"]]


def test_a_decide_batch_reads_its_patients_reminders_by_index(engine: Engine) -> None:
    """The same-day rule and the daily cap read each batch's patients' live reminders: by patient, not
    by walking the sent history."""
    fill_history(engine)
    decider = build_service(load_settings(mode="demo"), engine=engine).decider
    attach(decider, load_settings(mode="demo"))
    items = []
    for number in range(7, 12):  # a batch: several patients, read with one IN (...)
        appointment = synthetic_appointment(f"Patient/{number}", appointment_id=f"g{number}")
        appointment["meta"] = {"versionId": "1"}
        items.append(DecideItem(appointment, synthetic_patient(number=number, patient_id=str(number))))
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().startswith("SELECT outbox.patient_ref"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        decider.record_batch(items)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = seen
    found = plan(engine, statement, parameters)
    if engine.dialect.name == "postgresql":
        assert "ix_outbox_patient_rule" in found and "Seq Scan" not in found, found
    else:
        assert "USING INDEX ix_outbox_patient_rule" in found, found
