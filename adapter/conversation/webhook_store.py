"""Storing a signed WhatsApp webhook fast, before its 200: statuses, inbound messages and template events.

Meta expects a quick answer, so the receiver (:mod:`adapter.http.whatsapp_webhook`) only stores,
with one insert per kind and duplicates ignored: a status once per message id and status, an
inbound message once per id (its content encrypted and redacted, :mod:`adapter.conversation.content`).
The pipeline afterwards applies statuses to the outbox (:mod:`adapter.outbox.statuses`) and
processes inbound messages (:mod:`adapter.conversation.inbound`). Template status events update the
template states at once (:mod:`adapter.outbox.templates`); an event that names no known state
raises an operator alert.

Audit: every new status is recorded (``status``, agent ``meta``, entity ``message/<wamid>``) in the
transaction that stores it, with one bulk write per webhook; a repeated status adds nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.conversation.content import encode_content
from adapter.conversation.tables import InboundMessage
from adapter.ops.alerts import raise_alert
from adapter.outbox.encoding import outbox_id_from_callback
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.outbox.templates import record_states, state_after
from adapter.recipients.contacts import ContactBook
from adapter.storage.db import insert_ignoring_duplicates, table_of, transaction, utcnow
from whatsapp.webhook import WebhookBatch


def store_batch(engine: Engine, batch: WebhookBatch, contacts: ContactBook) -> int:
    """Stores a webhook's statuses, inbound messages (content encrypted) and template states;
    returns how many statuses and messages were new."""
    now = utcnow()
    status_rows = [
        {"dedupe_key": f"{s.message_id}:{s.status}", "wamid": s.message_id, "status": s.status,
         "meta_timestamp": s.timestamp, "callback_data": s.biz_opaque_callback_data,
         "error_code": s.errors[0].code if s.errors else None,
         "error_title": s.errors[0].title[:200] if s.errors else None,
         "user_id_index": contacts.index.user_id(s.recipient_user_id) if s.recipient_user_id else None,
         "pricing": json.dumps(s.pricing) if s.pricing else None, "received_at": now, "applied_at": None}
        for s in batch.statuses
    ]
    message_rows = [
        {"wamid": m.message_id, "message_type": m.type, "meta_timestamp": m.timestamp, "received_at": now,
         "state": "pending", "content_enc": encode_content(contacts.cipher, m)}
        for m in batch.messages
    ]
    with transaction(engine) as session:
        # A repeat delivery is dropped by a plain read first: on PostgreSQL an INSERT … ON CONFLICT
        # against a row that the status step is updating would wait for that transaction to end.
        status_rows = _unseen(session, WhatsAppStatus.dedupe_key, status_rows, "dedupe_key")
        message_rows = _unseen(session, InboundMessage.wamid, message_rows, "wamid")
        new_statuses = _insert_new(session, WhatsAppStatus, status_rows, "dedupe_key")
        stored = len(new_statuses) + insert_ignoring_duplicates(session, InboundMessage, message_rows, "wamid")
        _audit_statuses(session, _first_of_each(status_rows, new_statuses), now)
    if batch.template_statuses:
        _record_template_events(engine, batch)
    return stored


def _record_template_events(engine: Engine, batch: WebhookBatch) -> None:
    states = []
    for event in batch.template_statuses:
        if not (event.name and event.language):
            continue
        state = state_after(event.event)
        if state is not None:
            states.append((event.name, event.language, state, event.template_id, event.reason))
        else:
            with transaction(engine) as session:
                raise_alert(session, f"template_event:{event.name}:{event.language}:{event.event}",
                            "template_event", f"template {event.name}/{event.language}: {event.event}")
    record_states(engine, states)


def _insert_new(session: Session, model: type[SQLModel], rows: list[dict[str, Any]], key: str) -> set[Any]:
    """Like :func:`adapter.storage.db.insert_ignoring_duplicates`, but says WHICH rows were new, so a status
    stored by a concurrent delivery of the same webhook is audited once, by the one that stored it."""
    if not rows:
        return set()
    table = table_of(model)
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = pg_insert(table).on_conflict_do_nothing(index_elements=[key])
    else:
        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])
    return {found[0] for found in session.execute(statement.returning(table.c[key]), rows).all()}


def _first_of_each(rows: list[dict[str, Any]], new_keys: set[Any]) -> list[dict[str, Any]]:
    """The rows that were stored, once each (one webhook may repeat a status)."""
    left = set(new_keys)
    found = []
    for row in rows:
        if row["dedupe_key"] in left:
            left.discard(row["dedupe_key"])
            found.append(row)
    return found


def _audit_statuses(session: Session, rows: list[dict[str, Any]], at: datetime) -> None:
    """One audit entry per new status, written in one statement. The patient comes from the outbox
    row named by our callback data (every send carries it), with one primary-key lookup for the
    whole batch; a status without it (not ours, or from an older send) is recorded without one."""
    if not rows:
        return
    callbacks = [outbox_id_from_callback(row["callback_data"]) for row in rows]
    ids = {found for found in callbacks if found is not None}
    outbox = table_of(OutboxMessage)
    patients: dict[int, str] = dict(session.execute(
        sa_select(outbox.c.id, outbox.c.patient_ref).where(outbox.c.id.in_(ids))).all()) if ids else {}
    entries = []
    for row, callback_id in zip(rows, callbacks, strict=True):
        failed = row["status"] == "failed"
        entries.append(AuditEntry(
            kind=Kind.STATUS, action=Action.CREATE, outcome=Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
            agent="meta", patient_ref=patients.get(callback_id) if callback_id is not None else None,
            entity_ref=f"message/{row['wamid']}",
            detail={"status": row["status"], "error_code": row["error_code"]} if failed
            else {"status": row["status"]}))
    record(session, *entries, at=at)


def _unseen(session: Session, column: Any, rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    if not rows:
        return rows
    seen = set(session.exec(select(column).where(col(column).in_([row[key] for row in rows]))).all())
    return [row for row in rows if row[key] not in seen]
