"""Storing signed WhatsApp webhooks fast, before their 200: statuses, inbound messages and template events.

Meta expects a quick answer, so the receiver (:mod:`adapter.http.whatsapp_webhook`) only stores, and
stores the webhooks that arrive together in one transaction (group commit, :func:`store_batches`):
one read and one multi-row insert per kind for the whole group, duplicates ignored — a status once
per message id and status, an inbound message once per id (its content encrypted and redacted,
:mod:`adapter.conversation.content`). The pipeline afterwards applies statuses to the outbox
(:mod:`adapter.outbox.statuses`) and processes inbound messages (:mod:`adapter.conversation.inbound`).
Template status events update the template states at once (:mod:`adapter.outbox.templates`); an
event that names no known state raises an operator alert.

Audit: every new status is recorded (``status``, agent ``meta``, entity ``message/<wamid>``) in the
transaction that stores it, with one bulk write per group; a repeated status adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.conversation.content import encode_content
from adapter.conversation.tables import InboundMessage
from adapter.ops.alerts import raise_alert
from adapter.outbox.encoding import outbox_id_from_callback
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.outbox.templates import record_states, state_after
from adapter.recipients.contacts import ContactBook
from adapter.storage.db import table_of, transaction, utcnow
from whatsapp.webhook import WebhookBatch

Rows = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    statuses: Rows
    messages: Rows


def store_batch(engine: Engine, batch: WebhookBatch, contacts: ContactBook) -> int:
    """Stores one webhook's statuses, inbound messages (content encrypted) and template states;
    returns how many statuses and messages were new."""
    [stored] = store_batches(engine, [batch], contacts)
    record_template_events(engine, batch)
    return stored


def store_batches(engine: Engine, batches: list[WebhookBatch], contacts: ContactBook) -> list[int]:
    """Stores the statuses and inbound messages of several webhooks in ONE transaction, with their
    audit entries; returns, per webhook, how many of its items were new (an item repeated across the
    webhooks counts for the first that carries it). Template events are not stored here
    (:func:`record_template_events`, after the commit). Raises if the shared write fails: nothing
    of the group is then stored."""
    now = utcnow()
    prepared = [_prepare(batch, contacts, now) for batch in batches]
    with transaction(engine) as session:
        new_statuses = _store_new(session, WhatsAppStatus, "dedupe_key", [p.statuses for p in prepared])
        new_messages = _store_new(session, InboundMessage, "wamid", [p.messages for p in prepared])
        _audit_statuses(session, [row for rows in new_statuses for row in rows], now)
    return [len(statuses) + len(messages) for statuses, messages in zip(new_statuses, new_messages, strict=True)]


def _prepare(batch: WebhookBatch, contacts: ContactBook, now: datetime) -> _Prepared:
    statuses = [
        {"dedupe_key": f"{s.message_id}:{s.status}", "wamid": s.message_id, "status": s.status,
         "meta_timestamp": s.timestamp, "callback_data": s.biz_opaque_callback_data,
         "error_code": s.errors[0].code if s.errors else None,
         "error_title": s.errors[0].title[:200] if s.errors else None,
         "user_id_index": contacts.index.user_id(s.recipient_user_id) if s.recipient_user_id else None,
         "pricing": json.dumps(s.pricing) if s.pricing else None, "received_at": now, "applied_at": None}
        for s in batch.statuses
    ]
    messages = [
        {"wamid": m.message_id, "message_type": m.type, "meta_timestamp": m.timestamp, "received_at": now,
         "state": "pending", "content_enc": encode_content(contacts.cipher, m)}
        for m in batch.messages
    ]
    return _Prepared(statuses, messages)


def record_template_events(engine: Engine, batch: WebhookBatch) -> None:
    """Template review events update the states at once; an unknown event raises an alert."""
    if not batch.template_statuses:
        return
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


def _store_new(session: Session, model: type[SQLModel], key: str, per_batch: list[Rows]) -> list[Rows]:
    """Inserts each distinct ``key`` once (the first row that carries it) and returns, per batch, the
    rows that were new. A repeat delivery is dropped by a plain read first: on PostgreSQL an INSERT …
    ON CONFLICT against a row that the status step is updating would wait for that transaction to end.
    Rows go in arrival order: statuses are applied in id order, and a status that settles a lost send
    must come before the later statuses of that message."""
    first: dict[Any, tuple[int, dict[str, Any]]] = {}
    for index, rows in enumerate(per_batch):
        for row in rows:
            first.setdefault(row[key], (index, row))
    stored: list[Rows] = [[] for _ in per_batch]
    if not first:
        return stored
    table = table_of(model)
    seen = set(session.execute(select(table.c[key]).where(table.c[key].in_(list(first)))).scalars())
    fresh = [row for value, (_, row) in first.items() if value not in seen]
    new = _insert_new(session, model, fresh, key)
    for value, (index, row) in first.items():  # group order, so the audit trail follows arrival
        if value in new:
            stored[index].append(row)
    return stored


def _insert_new(session: Session, model: type[SQLModel], rows: Rows, key: str) -> set[Any]:
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


def _audit_statuses(session: Session, rows: Rows, at: datetime) -> None:
    """One audit entry per new status, written in one statement. The patient comes from the outbox
    row named by our callback data (every send carries it), with one primary-key lookup for the
    whole group; a status without it (not ours, or from an older send) is recorded without one."""
    if not rows:
        return
    callbacks = [outbox_id_from_callback(row["callback_data"]) for row in rows]
    ids = {found for found in callbacks if found is not None}
    outbox = table_of(OutboxMessage)
    patients: dict[int, str] = dict(session.execute(
        select(outbox.c.id, outbox.c.patient_ref).where(outbox.c.id.in_(ids))).all()) if ids else {}
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
