"""Statuses applied in one set-based batch end exactly as when applied one at a time, on SQLite and
PostgreSQL: monotonic ranks whatever the order, a lost answer settled by our callback data (with its
disclosure entry), a failed status re-queued, and a later status of the retired message id ignored;
and the claim reads only unapplied statuses, whatever the applied history."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.conversation.webhook_store import store_batch
from adapter.outbox.encoding import callback_data
from adapter.outbox.results import SendOutcome
from adapter.outbox.statuses import apply_pending
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import table_of, transaction, utcnow
from tests.support.stores import contact_book, outbox_store
from whatsapp.webhook import parse_webhook


def add_row(engine: Engine, key: str, state: str, wamid: str | None) -> int:
    now = utcnow()
    with transaction(engine) as session:
        row = OutboxMessage(natural_key=key, rule_id="r", resource_ref="Appointment/1", patient_ref="Patient/1",
                            state=state, due_at=now, wamid=wamid, created_at=now, updated_at=now, attempts=1,
                            payload=json.dumps({"type": "template", "template": {"name": "results_ready"}}))
        session.add(row)
        session.flush()
        return row.id or 0


def scenario(engine: Engine, tag: str) -> dict[str, int]:
    """Rows and statuses (stored, not applied) of one run; returns the rows' ids by name."""
    rows = {"ranked": add_row(engine, f"{tag}-a", "sent", f"wamid.{tag}A"),
            "lost": add_row(engine, f"{tag}-b", "queued", None),
            "failed": add_row(engine, f"{tag}-c", "sent", f"wamid.{tag}C")}
    items: list[dict[str, Any]] = [
        {"id": f"wamid.{tag}A", "status": "read", "timestamp": "30"},
        {"id": f"wamid.{tag}A", "status": "sent", "timestamp": "10"},
        {"id": f"wamid.{tag}B", "status": "sent", "timestamp": "11",
         "biz_opaque_callback_data": callback_data(rows["lost"])},
        {"id": f"wamid.{tag}A", "status": "delivered", "timestamp": "20"},
        {"id": f"wamid.{tag}B", "status": "delivered", "timestamp": "21"},
        {"id": f"wamid.{tag}C", "status": "failed", "timestamp": "12", "errors": [{"code": 131000, "title": "x"}]},
        {"id": f"wamid.{tag}C", "status": "delivered", "timestamp": "22"},  # its message id was retired
    ]
    body = {"object": "whatsapp_business_account", "entry": [{"id": "2", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"},
        "statuses": [{**item, "recipient_id": "12015550100"} for item in items]}}]}]}
    store_batch(engine, parse_webhook(body), contact_book())
    return rows


def outcome(engine: Engine, rows: dict[str, int], tag: str) -> dict[str, Any]:
    with Session(engine) as session:
        found = {name: session.get(OutboxMessage, row_id) for name, row_id in rows.items()}
        disclosures = session.exec(select(AuditEvent.detail).where(
            col(AuditEvent.kind) == "disclosure", col(AuditEvent.entity_ref) == f"message/wamid.{tag}B")).all()
    return {name: (row.state, row.wamid and row.wamid.replace(tag, "*"), row.delivery_status, row.delivery_status_ts,
                   row.last_error_code, row.last_error_class)
            for name, row in found.items() if row is not None} | {
        "disclosures": [str(detail).replace(str(rows["lost"]), "*") for detail in disclosures]}


def test_a_batch_ends_as_one_status_at_a_time(engine: Engine) -> None:
    one_by_one = scenario(engine, "one")
    while apply_pending(engine, limit=1):
        pass
    batched = scenario(engine, "set")
    assert apply_pending(engine) == 7
    expected = outcome(engine, one_by_one, "one")
    assert outcome(engine, batched, "set") == expected
    assert expected["ranked"][2:4] == ("read", 30) and expected["lost"][:3] == ("sent", "wamid.*B", "delivered")
    assert expected["failed"][:3] == ("queued", None, None) and len(expected["disclosures"]) == 1


def test_the_claim_reads_only_unapplied_statuses_whatever_the_history(engine: Engine) -> None:
    """With 20,000 applied statuses and a backlog past 10,000 unapplied ones, the statement the claim
    really issues is planned as a read of the partial index of unapplied statuses, in id order (EXPLAIN
    on PostgreSQL, EXPLAIN QUERY PLAN on SQLite): a plan, not a timing."""
    now = utcnow()
    rows = [{"dedupe_key": f"wamid.H{n}:sent", "wamid": f"wamid.H{n}", "status": "sent", "meta_timestamp": n,
             "received_at": now, "applied_at": now if n < 20_000 else None} for n in range(32_000)]
    with engine.begin() as connection:
        connection.execute(insert(table_of(WhatsAppStatus)), rows)
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE wa_status"))
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM wa_status" in statement and not seen:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert apply_pending(engine, limit=500) == 500
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = seen
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        plan = " ".join(str(line) for line in connection.exec_driver_sql(explain + statement, parameters).all())
    assert "ix_wa_status_unapplied" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan and "TEMP B-TREE" not in plan, plan


def test_a_status_teaches_the_business_scoped_user_id_of_a_number(engine: Engine) -> None:
    outbox = outbox_store(engine)
    with transaction(engine) as session:
        outbox.enqueue_message(session, natural_key="k-bsuid", rule_id="rule", resource_ref="Appointment/1",
                               patient_ref="Patient/1", recipient="+12015550131", due_at=utcnow(),
                               message={"type": "template", "template": {"name": "results_ready"}})
    [claimed] = outbox.claim_due(1)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "sent", wamid="wamid.U1")])
    items = [{"id": "wamid.U1", "status": status, "timestamp": str(n), "recipient_id": "12015550131",
              "recipient_user_id": user_id}
             for n, (status, user_id) in enumerate((("sent", "US.1000000000000000131"),
                                                     ("delivered", "US.2000000000000000131")))]
    body = {"object": "whatsapp_business_account", "entry": [{"id": "2", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"}, "statuses": items}}]}]}
    store_batch(engine, parse_webhook(body), outbox.contacts)
    assert apply_pending(engine) == 2
    with Session(engine) as session:
        [contact] = session.exec(select(WhatsAppContact)).all()
    assert contact.user_id_index == outbox.contacts.index.user_id("US.1000000000000000131")  # the first one
