"""WhatsApp statuses and inbound messages: stored fast, applied afterwards.

The webhook receiver only stores (one insert per kind, duplicates ignored: a status once per
message id and status, an inbound message once per id) and answers 200, as Meta expects a quick
answer; the pipeline then applies pending statuses to the outbox in batches (:func:`apply_pending`),
claimed with ``SKIP LOCKED`` so several instances can share the work, and processes inbound
messages (:mod:`adapter.conversation.inbound`).

Application is monotonic — sent < delivered < read, whatever order they arrive in, keyed by
message id — and a status that carries our ``biz_opaque_callback_data`` settles a send whose
answer was lost. A ``failed`` status is classified like a synchronous error
(https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes): transient → retry
with backoff; 131056 → this recipient only, after ≥ 6 s; 131047 → re-planned as the fallback
template; undeliverable → dead letter and fallback hook; configuration → dead letter and alert;
account-level → sending pauses.

Audit: every new status is recorded (``status``, agent ``meta``, entity ``message/<wamid>``) in the
transaction that stores it, with one bulk write per webhook; a repeated status adds nothing. A
status that settles a send whose answer was lost completes that send's disclosure record
(:func:`adapter.outbox.store.disclosure_entry`, ``via: status``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.conversation.inbound import encode_content
from adapter.conversation.tables import InboundMessage
from adapter.ops.alerts import raise_alert
from adapter.outbox.circuit_breaker import pause_sending
from adapter.outbox.dispatch import RetryPolicy
from adapter.outbox.store import OutboxStore, disclosure_entry, lock_rows_in_order, outbox_id_from_callback
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.outbox.templates import record_states, state_after
from adapter.recipients.contacts import ContactBook
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import insert_ignoring_duplicates, table_of, transaction, utcnow
from whatsapp.errors import (
    AccountBlockedError,
    ConfigurationError,
    RecipientThrottledError,
    RetryableError,
    UndeliverableError,
    WindowClosedError,
    from_error_fields,
)
from whatsapp.webhook import WebhookBatch

log = logging.getLogger(__name__)

STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}


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


def apply_pending(engine: Engine, limit: int = 500, policy: RetryPolicy | None = None) -> int:
    """Applies up to ``limit`` stored statuses to the outbox in one transaction; returns how many."""
    policy = policy or RetryPolicy(8, 2.0, 900.0)
    with transaction(engine) as session:
        pending = list(session.exec(
            select(WhatsAppStatus).where(col(WhatsAppStatus.applied_at).is_(None))
            .order_by(col(WhatsAppStatus.id)).limit(limit).with_for_update(skip_locked=True)))
        now = utcnow()
        # Several instances: lock the outbox rows these statuses touch in id order first, as OutboxStore.record
        # does, so the two never deadlock on them.
        lock_rows_in_order(session, [i for i in (outbox_id_from_callback(s.callback_data) for s in pending) if i],
                           [status.wamid for status in pending])
        for status in pending:
            row = _apply(session, status, policy)
            if row is not None and status.user_id_index is not None and row.recipient_key is not None:
                _link_user_id(session, row.recipient_key, status.user_id_index)
            status.applied_at = now
            session.add(status)
        return len(pending)


def _link_user_id(session: Session, phone_index: bytes, user_id_index: bytes) -> None:
    """Meta told us the business-scoped user id of a number we message: remember it, so a later
    message from that user without a phone number still finds the patient."""
    for contact in session.exec(select(WhatsAppContact).where(col(WhatsAppContact.phone_index) == phone_index,
                                                               col(WhatsAppContact.user_id_index).is_(None))):
        contact.user_id_index = user_id_index
        session.add(contact)


def _outbox_row(session: Session, condition: ColumnElement[bool]) -> OutboxMessage | None:
    # Locked, so two instances applying statuses of one message cannot undo each other's step.
    return session.exec(select(OutboxMessage).where(condition).with_for_update()).first()


def _apply(session: Session, status: WhatsAppStatus, policy: RetryPolicy) -> OutboxMessage | None:
    row = None
    callback_id = outbox_id_from_callback(status.callback_data)
    if callback_id is not None:
        row = _outbox_row(session, col(OutboxMessage.id) == callback_id)
        if row is not None and OutboxStore.settle_by_status(row, status.wamid):
            # The lost answer's send did reach Meta: record the disclosure it was.
            record(session, disclosure_entry(row, row.id or 0, row.attempts, "sent", wamid=status.wamid,
                                             via="status"))
    if row is None or row.wamid != status.wamid:
        row = _outbox_row(session, col(OutboxMessage.wamid) == status.wamid)
    if row is None:
        return None
    current = STATUS_RANK.get(row.delivery_status or "", 0)
    if status.status == "failed":
        if current < STATUS_RANK["delivered"] and row.state == "sent":
            row.delivery_status, row.delivery_status_ts = "failed", status.meta_timestamp
            row.last_error_code = status.error_code
            _after_failure(session, row, status, policy)
    elif STATUS_RANK.get(status.status, 0) > current:
        row.delivery_status, row.delivery_status_ts = status.status, status.meta_timestamp
    session.add(row)
    return row


def _after_failure(session: Session, row: OutboxMessage, status: WhatsAppStatus, policy: RetryPolicy) -> None:
    """Meta accepted the message and then could not deliver it: decide as for a synchronous error."""
    error = from_error_fields(code=status.error_code, message=status.error_title or "")
    name = type(error).__name__
    row.last_error_class = name
    log.warning("message failed after acceptance: outbox=%s class=%s code=%s", row.id, name, error.code)

    def again(delay: timedelta) -> None:
        # The failed wamid is finished; the retry will get a new one.
        row.state, row.wamid, row.due_at, row.delivery_status = "queued", None, utcnow() + delay, None

    if isinstance(error, WindowClosedError):
        OutboxStore.replan_as_template(session, row)
    elif isinstance(error, UndeliverableError | ConfigurationError):
        OutboxStore.bury(session, row, f"{name} code={error.code} (reported by status)", name)
    elif isinstance(error, AccountBlockedError):
        pause_sending(session, f"{name} code={error.code}: {error.title}")
        again(timedelta(minutes=1))
    elif row.attempts >= policy.max_attempts:
        OutboxStore.bury(session, row, f"gave up after {row.attempts} attempts ({name})", name)
    elif isinstance(error, RecipientThrottledError):
        again(timedelta(seconds=max(6.0, error.retry_after_seconds)))
    elif isinstance(error, RetryableError):
        again(policy.delay(row.attempts))
    else:
        OutboxStore.bury(session, row, f"unclassified failure {name} code={error.code}", name)
