"""Applying stored WhatsApp statuses to the outbox, after the webhook's 200.

The webhook receiver only stores statuses (:mod:`adapter.conversation.webhook_store`); the pipeline
then applies pending ones in batches (:func:`apply_pending`), claimed with ``SKIP LOCKED`` so several
instances can share the work.

Application is monotonic — sent < delivered < read, whatever order they arrive in, keyed by
message id — and a status that carries our ``biz_opaque_callback_data`` settles a send whose
answer was lost. A ``failed`` status is classified like a synchronous error
(https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes): transient → retry
with backoff; 131056 → this recipient only, after ≥ 6 s; 131047 → re-planned as the fallback
template; undeliverable → dead letter and fallback hook; configuration → dead letter and alert;
account-level → sending pauses.

Audit: a status that settles a send whose answer was lost completes that send's disclosure record
(:func:`adapter.outbox.results.disclosure_entry`, ``via: status``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import ColumnElement
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import record
from adapter.outbox.circuit_breaker import pause_sending
from adapter.outbox.dead_letters import bury
from adapter.outbox.dispatch import RetryPolicy
from adapter.outbox.encoding import outbox_id_from_callback
from adapter.outbox.results import disclosure_entry, lock_rows_in_order, replan_as_template
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import transaction, utcnow
from whatsapp.errors import (
    AccountBlockedError,
    ConfigurationError,
    RecipientThrottledError,
    RetryableError,
    UndeliverableError,
    WindowClosedError,
    from_error_fields,
)

log = logging.getLogger(__name__)

STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}


def apply_pending(engine: Engine, limit: int = 500, policy: RetryPolicy | None = None) -> int:
    """Applies up to ``limit`` stored statuses to the outbox in one transaction; returns how many."""
    policy = policy or RetryPolicy(8, 2.0, 900.0)
    with transaction(engine) as session:
        pending = list(session.exec(
            select(WhatsAppStatus).where(col(WhatsAppStatus.applied_at).is_(None))
            .order_by(col(WhatsAppStatus.id)).limit(limit).with_for_update(skip_locked=True)))
        now = utcnow()
        # Several instances: lock the outbox rows these statuses touch in id order first, as
        # adapter.outbox.results.record_outcomes does, so the two never deadlock on them.
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


def _settle_by_status(row: OutboxMessage, wamid: str) -> bool:
    """A status proved that a send whose answer was lost reached Meta: mark it sent instead of
    resending it. Returns whether the row changed."""
    if row.wamid is not None or row.state not in ("queued", "sending"):
        return False
    row.state, row.wamid, row.sent_at, row.lease_until = "sent", wamid, utcnow(), None
    return True


def _apply(session: Session, status: WhatsAppStatus, policy: RetryPolicy) -> OutboxMessage | None:
    row = None
    callback_id = outbox_id_from_callback(status.callback_data)
    if callback_id is not None:
        row = _outbox_row(session, col(OutboxMessage.id) == callback_id)
        if row is not None and _settle_by_status(row, status.wamid):
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
        replan_as_template(session, row)
    elif isinstance(error, UndeliverableError | ConfigurationError):
        bury(session, row, f"{name} code={error.code} (reported by status)", name)
    elif isinstance(error, AccountBlockedError):
        pause_sending(session, f"{name} code={error.code}: {error.title}")
        again(timedelta(minutes=1))
    elif row.attempts >= policy.max_attempts:
        bury(session, row, f"gave up after {row.attempts} attempts ({name})", name)
    elif isinstance(error, RecipientThrottledError):
        again(timedelta(seconds=max(6.0, error.retry_after_seconds)))
    elif isinstance(error, RetryableError):
        again(policy.delay(row.attempts))
    else:
        bury(session, row, f"unclassified failure {name} code={error.code}", name)
