"""The scrape-time gauges read the same from the database on SQLite and PostgreSQL, and on PostgreSQL
the queue statement can be answered from the claims' partial indexes (the scrape's cost follows the
work in hand, not the history)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from adapter.feeds.tables import InboxEvent
from adapter.http.metrics import DatabaseCollector, queue_statement
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import make_engine, transaction, utcnow


def _outbox(key: str, state: str, due_in: timedelta, template: str | None) -> OutboxMessage:
    now = utcnow()
    return OutboxMessage(natural_key=key, rule_id="r", resource_ref="Appointment/1", patient_ref="Patient/1",
                         state=state, due_at=now + due_in, body_type="template" if template else "text",
                         template_name=template, created_at=now, updated_at=now)


def _gauges(engine: Engine) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(sample.name, tuple(sample.labels.values())): sample.value
            for family in DatabaseCollector(engine).collect() for sample in family.samples}


def test_gauges_count_the_work_in_hand(engine: Engine) -> None:
    now = utcnow()
    with transaction(engine) as session:
        session.add_all([_outbox("a", "queued", timedelta(minutes=-2), "appointment_confirmation"),
                         _outbox("b", "queued", timedelta(days=2), "appointment_reminder"),
                         _outbox("c", "dead", timedelta(0), "appointment_confirmation"),
                         _outbox("d", "sent", timedelta(0), "appointment_confirmation")])
        session.add(InboxEvent(dedupe_key="e1", kind="resource", subscription_key="appointment", state="pending",
                               next_attempt_at=now, received_at=now - timedelta(seconds=30)))
    gauges = _gauges(engine)
    assert gauges[("bridge_metrics_database_up", ())] == 1
    assert gauges[("bridge_outbox_messages", ("queued", "appointment_confirmation"))] == 1
    assert gauges[("bridge_outbox_messages", ("queued", "appointment_reminder"))] == 1
    assert gauges[("bridge_outbox_dead_letters", ("appointment_confirmation",))] == 1
    assert gauges[("bridge_queue_depth", ("outbox",))] == 1  # the reminder planned for later is not a backlog
    assert gauges[("bridge_queue_oldest_age_seconds", ("outbox",))] >= 120
    assert gauges[("bridge_queue_depth", ("inbox",))] == 1
    assert gauges[("bridge_queue_oldest_age_seconds", ("inbox",))] >= 30
    assert gauges[("bridge_queue_depth", ("statuses",))] == 0
    assert gauges[("bridge_queue_oldest_age_seconds", ("actions",))] == 0
    assert gauges[("bridge_sending_paused", ())] == 0


def test_an_unreadable_database_leaves_a_gauge_saying_so(tmp_path: Path) -> None:
    gauges = _gauges(make_engine(f"sqlite:///{tmp_path}/never-migrated.db"))
    assert gauges == {("bridge_metrics_database_up", ()): 0}


def test_postgres_can_answer_the_queue_statement_from_the_partial_indexes(pg_engine: Engine) -> None:
    with pg_engine.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))  # an empty table would be scanned otherwise
        compiled = queue_statement(utcnow()).compile(pg_engine, compile_kwargs={"render_postcompile": True})
        plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
    for index in ("ix_inbox_claimable", "ix_outbox_claimable", "ix_wa_status_unapplied"):
        assert index in plan, plan
