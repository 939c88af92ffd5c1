"""Applying stored WhatsApp statuses to the outbox, after the webhook's 200.

The webhook receiver only stores statuses (:mod:`adapter.conversation.webhook_store`); the pipeline
then applies pending ones in batches (:func:`apply_pending`), claimed with ``SKIP LOCKED`` so several
instances can share the work. A batch works in sets: the claim reads a partial index of the unapplied
statuses only (so its cost does not grow with the applied history), the outbox rows are read in one
statement, the statuses are applied in memory in id order, and the results are written with one
statement per kind — four statements for a batch of deliveries, whatever its size.

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
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_

from adapter.audit.trail import AuditEntry, record
from adapter.ops.logs import traced
from adapter.ops.metrics import count_statuses
from adapter.outbox.circuit_breaker import pause_sending
from adapter.outbox.dead_letters import bury
from adapter.outbox.dispatch import RetryPolicy
from adapter.outbox.encoding import outbox_id_from_callback
from adapter.outbox.results import disclosure_entry, replan_as_template
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import table_of, transaction, utcnow
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
_status = table_of(WhatsAppStatus)
_contact = table_of(WhatsAppContact)
# The claim reads the partial index of unapplied statuses (ix_wa_status_unapplied) in id order, so
# its cost does not grow with the applied history.
_CLAIM = (select(_status.c.id, _status.c.wamid, _status.c.status, _status.c.meta_timestamp, _status.c.callback_data,
                 _status.c.error_code, _status.c.error_title, _status.c.user_id_index)
          .where(_status.c.applied_at.is_(None)).order_by(_status.c.id))
_LINK = (update(_contact).where(_contact.c.phone_index == bindparam("phone"), _contact.c.user_id_index.is_(None))
         .values(user_id_index=bindparam("user_id")))


def apply_pending(engine: Engine, limit: int = 500, policy: RetryPolicy | None = None) -> int:
    """Applies up to ``limit`` stored statuses to the outbox in one transaction; returns how many.

    In sets: one claim of the statuses, one read of the outbox rows they concern (locked in id order,
    as :func:`adapter.outbox.results.record_outcomes` locks them, so several instances wait for each
    other instead of deadlocking), the statuses applied in id order in memory exactly as one by one,
    then one write per kind: the changed outbox rows, the learnt user ids, the audit entries and the
    statuses' ``applied_at``."""
    policy = policy or RetryPolicy(8, 2.0, 900.0)
    with transaction(engine) as session:
        pending = session.execute(_CLAIM.limit(limit).with_for_update(skip_locked=True)).all()
        if not pending:
            return 0
        rows = _locked_rows(session, pending)
        by_id = {row.id: row for row in rows}
        by_wamid = {row.wamid: row for row in rows if row.wamid is not None}
        audit: list[AuditEntry] = []
        links: dict[bytes, bytes] = {}
        applied: list[tuple[str, str, int | None]] = []  # logged once committed
        changed: list[tuple[str, str, int | None]] = []  # counted once committed: (status, template, code)
        for status in pending:
            row = _apply(session, status, by_id, by_wamid, policy, audit, changed)
            if row is not None:
                applied.append((row.resource_ref, status.status, row.id))
            if row is not None and status.user_id_index is not None and row.recipient_key is not None:
                # Meta told us the business-scoped user id of a number we message: remember it, so a
                # later message from that user without a phone number still finds the patient. Only
                # contacts without one are set, so the first status per number wins, as one by one.
                links.setdefault(row.recipient_key, status.user_id_index)
        session.flush()
        record(session, *audit)
        if links:
            session.execute(_LINK, [{"phone": phone, "user_id": user_id} for phone, user_id in links.items()])
        session.execute(update(_status).where(_status.c.id.in_([status.id for status in pending]))
                        .values(applied_at=utcnow()))
    count_statuses(changed)  # committed: the process's delivery counters (adapter.ops.metrics)
    for resource_ref, name, outbox_id in applied:  # the status step of the journey (adapter.ops.logs)
        with traced(resource_ref):
            log.info("status %s applied: outbox=%s", name, outbox_id)
    return len(pending)


def _locked_rows(session: Session, pending: Sequence[Row[Any]]) -> list[OutboxMessage]:
    """Every outbox row the statuses may touch (named by our callback data or by message id), read
    and locked in one statement, in id order. Locked, so two instances applying statuses of one
    message cannot undo each other's step."""
    ids = [found for found in (outbox_id_from_callback(status.callback_data) for status in pending) if found]
    condition: ColumnElement[bool] = col(OutboxMessage.wamid).in_({status.wamid for status in pending})
    if ids:
        condition = or_(condition, col(OutboxMessage.id).in_(set(ids)))
    return list(session.scalars(select(OutboxMessage).where(condition).order_by(col(OutboxMessage.id))
                                .with_for_update()))


def _settle_by_status(row: OutboxMessage, wamid: str) -> bool:
    """A status proved that a send whose answer was lost reached Meta: mark it sent instead of
    resending it. Returns whether the row changed."""
    if row.wamid is not None or row.state not in ("queued", "sending"):
        return False
    row.state, row.wamid, row.sent_at, row.lease_until = "sent", wamid, utcnow(), None
    return True


def _apply(session: Session, status: Row[Any], by_id: dict[int | None, OutboxMessage],
           by_wamid: dict[str, OutboxMessage], policy: RetryPolicy, audit: list[AuditEntry],
           changed: list[tuple[str, str, int | None]]) -> OutboxMessage | None:
    """One status, on the rows read for the batch; ``by_wamid`` follows every change of a row's wamid,
    so a later status of the batch finds the row where a query would have found it. A status that
    moved the row is added to ``changed`` as (status, template, Meta error code) for the metrics."""
    row = None
    callback_id = outbox_id_from_callback(status.callback_data)
    if callback_id is not None:
        row = by_id.get(callback_id)
        if row is not None and _settle_by_status(row, status.wamid):
            by_wamid[status.wamid] = row
            # The lost answer's send did reach Meta: record the disclosure it was.
            audit.append(disclosure_entry(row, row.id or 0, row.attempts, "sent", wamid=status.wamid, via="status"))
    if row is None or row.wamid != status.wamid:
        row = by_wamid.get(status.wamid)
    if row is None:
        return None
    current = STATUS_RANK.get(row.delivery_status or "", 0)
    template = row.template_name or row.body_type or "unknown"  # as adapter.ops.metrics.count_sends labels it
    if status.status == "failed":
        if current < STATUS_RANK["delivered"] and row.state == "sent":
            changed.append(("failed", template, status.error_code))
            row.delivery_status, row.delivery_status_ts = "failed", status.meta_timestamp
            row.last_error_code = status.error_code
            before = row.wamid
            _after_failure(session, row, status, policy)
            if before is not None and row.wamid != before:
                by_wamid.pop(before, None)
    elif STATUS_RANK.get(status.status, 0) > current:
        changed.append((status.status, template, None))
        row.delivery_status, row.delivery_status_ts = status.status, status.meta_timestamp
    return row


def _after_failure(session: Session, row: OutboxMessage, status: Row[Any], policy: RetryPolicy) -> None:
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
