"""The outbox: one row per message, its state machine, claims, attempts and dead letters.

States: ``queued`` → ``sending`` (claimed, leased) → ``sent``; or back to ``queued`` with a later
``due_at`` (retry); or ``dead`` (a visible dead letter an admin can re-drive). Each claim records a
:class:`~adapter.models.SendAttempt` before the call, because the Cloud API has no idempotency
key; the outbox id travels as ``biz_opaque_callback_data`` so a status can reconcile a send
whose answer was lost (DESIGN.md, invariants).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from adapter.crypto import FieldCipher
from adapter.db import insert_ignoring_duplicates, transaction, utcnow
from adapter.models import OutboxMessage, SendAttempt

SEND_LEASE = timedelta(minutes=2)
CALLBACK_PREFIX = "outbox:"


def recipient_context(natural_key: str) -> str:
    return f"outbox.recipient_enc:{natural_key}"


def callback_data(outbox_id: int) -> str:
    return f"{CALLBACK_PREFIX}{outbox_id}"


def outbox_id_from_callback(data: str | None) -> int | None:
    if data and data.startswith(CALLBACK_PREFIX) and data[len(CALLBACK_PREFIX):].isdigit():
        return int(data[len(CALLBACK_PREFIX):])
    return None


@dataclass(frozen=True)
class ClaimedMessage:
    outbox_id: int
    attempt_id: int
    attempt_no: int
    request: dict[str, Any]  # the Cloud API request body, recipient included: never log it


@dataclass(frozen=True)
class SendOutcome:
    outbox_id: int
    attempt_id: int
    result: Literal["sent", "retry", "ambiguous", "dead"]
    wamid: str | None = None
    retry_at: datetime | None = None
    error_code: int | None = None
    error_class: str | None = None
    dead_reason: str | None = None


class OutboxStore:
    def __init__(self, engine: Engine, cipher: FieldCipher) -> None:
        self.engine = engine
        self.cipher = cipher

    # --- writing (inside the decide step's transaction)

    def enqueue(self, session: Session, *, natural_key: str, rule_id: str, resource_ref: str,
                patient_ref: str, recipient: str, template: dict[str, Any], due_at: datetime) -> bool:
        """Queues a template message; False when the natural key exists (effectively-once)."""
        now = utcnow()
        row = {"natural_key": natural_key, "rule_id": rule_id, "resource_ref": resource_ref,
               "patient_ref": patient_ref,
               "recipient_enc": self.cipher.encrypt(recipient, context=recipient_context(natural_key)),
               "payload": json.dumps({"type": "template", "template": template}, separators=(",", ":")),
               "state": "queued", "due_at": due_at, "attempts": 0, "created_at": now, "updated_at": now}
        return insert_ignoring_duplicates(session, OutboxMessage, [row], "natural_key") == 1

    @staticmethod
    def exists(session: Session, natural_key: str) -> bool:
        found = session.exec(select(OutboxMessage.id).where(col(OutboxMessage.natural_key) == natural_key))
        return found.first() is not None

    @staticmethod
    def dead_on_arrival(session: Session, *, natural_key: str, rule_id: str, resource_ref: str,
                        patient_ref: str, reason: str) -> bool:
        """Records a message that must not be sent (e.g. the PHI guard blocked it) as a dead
        letter without payload: the blocked content itself is never stored."""
        now = utcnow()
        row = {"natural_key": natural_key, "rule_id": rule_id, "resource_ref": resource_ref,
               "patient_ref": patient_ref, "recipient_enc": None, "payload": None, "state": "dead",
               "dead_reason": reason[:200], "due_at": now, "attempts": 0, "created_at": now, "updated_at": now}
        return insert_ignoring_duplicates(session, OutboxMessage, [row], "natural_key") == 1

    # --- dispatching

    def claim_due(self, limit: int, now: datetime | None = None) -> list[ClaimedMessage]:
        """Claims due rows, and rows whose sending lease expired (a crash mid-send), recording an
        attempt for each before any call is made."""
        now = now or utcnow()
        claimed: list[ClaimedMessage] = []
        with transaction(self.engine) as session:
            rows = list(session.exec(
                select(OutboxMessage)
                .where(or_(
                    (col(OutboxMessage.state) == "queued") & (col(OutboxMessage.due_at) <= now),
                    (col(OutboxMessage.state) == "sending") & (col(OutboxMessage.lease_until) < now),
                ))
                .order_by(col(OutboxMessage.due_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ))
            attempts = []
            for row in rows:
                row.state, row.lease_until, row.updated_at = "sending", now + SEND_LEASE, now
                row.attempts += 1
                attempt = SendAttempt(outbox_id=row.id or 0, attempt_no=row.attempts, started_at=now)
                session.add(row)
                session.add(attempt)
                attempts.append(attempt)
            session.flush()
            for row, attempt in zip(rows, attempts, strict=True):
                request = json.loads(row.payload or "{}")
                request.update({
                    "messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": self.cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key)),
                    "biz_opaque_callback_data": callback_data(row.id or 0),
                })
                claimed.append(ClaimedMessage(row.id or 0, attempt.id or 0, row.attempts, request))
        return claimed

    def record(self, outcomes: list[SendOutcome]) -> None:
        """Applies a batch of send outcomes in one transaction."""
        now = utcnow()
        with transaction(self.engine) as session:
            for outcome in outcomes:
                row = session.get(OutboxMessage, outcome.outbox_id)
                attempt = session.get(SendAttempt, outcome.attempt_id)
                if attempt is not None:
                    attempt.finished_at, attempt.outcome = now, outcome.result
                    attempt.error_code, attempt.error_class = outcome.error_code, outcome.error_class
                    session.add(attempt)
                if row is None or row.state != "sending":
                    continue  # a status webhook reconciled it meanwhile, or an admin changed it
                row.updated_at, row.lease_until = now, None
                row.last_error_code, row.last_error_class = outcome.error_code, outcome.error_class
                if outcome.result == "sent":
                    row.state, row.wamid, row.sent_at = "sent", outcome.wamid, now
                elif outcome.result == "dead":
                    row.state, row.dead_reason = "dead", outcome.dead_reason
                else:
                    row.state, row.due_at = "queued", outcome.retry_at or now
                session.add(row)

    @staticmethod
    def settle_by_status(row: OutboxMessage, wamid: str) -> bool:
        """A status proved that a send whose answer was lost reached Meta: mark it sent instead of
        resending it. Returns whether the row changed."""
        if row.wamid is not None or row.state not in ("queued", "sending"):
            return False
        row.state, row.wamid, row.sent_at, row.lease_until = "sent", wamid, utcnow(), None
        return True

    # --- operators

    def dead_letters(self, limit: int = 100) -> list[OutboxMessage]:
        with Session(self.engine) as session:
            return list(session.exec(select(OutboxMessage).where(col(OutboxMessage.state) == "dead")
                                     .order_by(col(OutboxMessage.id)).limit(limit)))

    def redrive(self, outbox_id: int) -> str:
        """Puts a dead letter back in the queue; says why not when it cannot be."""
        with transaction(self.engine) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is None:
                return f"no outbox message {outbox_id}"
            if row.state != "dead":
                return f"message {outbox_id} is {row.state}, not a dead letter"
            if row.payload is None:
                return (f"message {outbox_id} was blocked before it had a payload ({row.dead_reason}); fix the "
                        f"cause, then `bridge replay {row.resource_ref}`")
            row.state, row.due_at, row.attempts, row.dead_reason = "queued", utcnow(), 0, None
            row.updated_at = utcnow()
            session.add(row)
            return f"message {outbox_id} queued again"
