"""WhatsApp statuses and inbound message ids: stored fast, applied afterwards.

The webhook receiver only stores (one insert per kind, duplicates ignored) and answers 200, as
Meta expects a quick answer; the pipeline then applies pending statuses to the outbox in batches
(:func:`apply_pending`), claimed with ``SKIP LOCKED`` so several instances can share the work.
Application is monotonic — sent < delivered < read, whatever order they arrive in — and a status
that carries our ``biz_opaque_callback_data`` settles a send whose answer was lost.
"""

from __future__ import annotations

import json

from sqlalchemy import ColumnElement
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.db import insert_ignoring_duplicates, transaction, utcnow
from adapter.models import InboundMessage, OutboxMessage, WhatsAppStatus
from adapter.outbox import OutboxStore, outbox_id_from_callback
from whatsapp.webhook import WebhookBatch

STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}


def store_batch(engine: Engine, batch: WebhookBatch) -> int:
    """Stores a webhook's statuses and inbound message ids; returns how many were new."""
    now = utcnow()
    status_rows = [
        {"dedupe_key": f"{s.message_id}:{s.status}", "wamid": s.message_id, "status": s.status,
         "meta_timestamp": s.timestamp, "callback_data": s.biz_opaque_callback_data,
         "error_code": s.errors[0].code if s.errors else None,
         "pricing": json.dumps(s.pricing) if s.pricing else None, "received_at": now, "applied_at": None}
        for s in batch.statuses
    ]
    message_rows = [
        {"wamid": m.message_id, "message_type": m.type, "meta_timestamp": m.timestamp, "received_at": now,
         "state": "pending"}
        for m in batch.messages
    ]
    with transaction(engine) as session:
        return (insert_ignoring_duplicates(session, WhatsAppStatus, status_rows, "dedupe_key")
                + insert_ignoring_duplicates(session, InboundMessage, message_rows, "wamid"))


def apply_pending(engine: Engine, limit: int = 500) -> int:
    """Applies up to ``limit`` stored statuses to the outbox in one transaction; returns how many."""
    with transaction(engine) as session:
        pending = list(session.exec(
            select(WhatsAppStatus).where(col(WhatsAppStatus.applied_at).is_(None))
            .order_by(col(WhatsAppStatus.id)).limit(limit).with_for_update(skip_locked=True)))
        now = utcnow()
        for status in pending:
            _apply(session, status)
            status.applied_at = now
            session.add(status)
        return len(pending)


def _outbox_row(session: Session, condition: ColumnElement[bool]) -> OutboxMessage | None:
    # Locked, so two instances applying statuses of one message cannot undo each other's step.
    return session.exec(select(OutboxMessage).where(condition).with_for_update()).first()


def _apply(session: Session, status: WhatsAppStatus) -> None:
    row = None
    callback_id = outbox_id_from_callback(status.callback_data)
    if callback_id is not None:
        row = _outbox_row(session, col(OutboxMessage.id) == callback_id)
        if row is not None:
            OutboxStore.settle_by_status(row, status.wamid)
    if row is None or row.wamid != status.wamid:
        row = _outbox_row(session, col(OutboxMessage.wamid) == status.wamid)
    if row is None:
        return
    current = STATUS_RANK.get(row.delivery_status or "", 0)
    if status.status == "failed":
        if current < STATUS_RANK["delivered"]:
            row.delivery_status, row.delivery_status_ts = "failed", status.meta_timestamp
            row.last_error_code = status.error_code
    elif STATUS_RANK.get(status.status, 0) > current:
        row.delivery_status, row.delivery_status_ts = status.status, status.meta_timestamp
    session.add(row)
