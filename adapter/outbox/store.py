"""The outbox: one row per message, queued effectively-once by its natural key, and the service's
handle on it (:class:`OutboxStore`).

States: ``queued`` → ``sending`` (claimed, leased) → ``sent``; or back to ``queued`` with a later
``due_at`` (retry, pacing, a re-plan as a template); ``dead`` (a visible dead letter an admin can
re-drive); ``suppressed`` (the patient opted out before it went). This module writes and reads the
rows; claiming is :mod:`adapter.outbox.claims`, recording send results :mod:`adapter.outbox.results`,
dead letters :mod:`adapter.outbox.dead_letters` (DESIGN.md, invariants).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.outbox import claims, results
from adapter.outbox import dead_letters as letters
from adapter.outbox.claims import ClaimedMessage, ClaimRules
from adapter.outbox.encoding import body_columns, recipient_context, seal_body
from adapter.outbox.results import SendOutcome
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.contacts import ContactBook
from adapter.storage.db import insert_ignoring_duplicates, utcnow


class OutboxStore:
    def __init__(self, engine: Engine, contacts: ContactBook, rules: ClaimRules | None = None) -> None:
        self.engine = engine
        self.contacts = contacts
        self.cipher = contacts.cipher
        self.rules = rules or ClaimRules()

    # --- writing (inside the decide step's or the inbound step's transaction)

    def enqueue(self, session: Session, *, natural_key: str, rule_id: str, resource_ref: str,
                patient_ref: str, recipient: str, template: dict[str, Any], due_at: datetime,
                recipient_key: bytes | None = None) -> bool:
        """Queues a template message; False when the natural key exists (effectively-once).
        ``recipient_key``: the number's index as :meth:`ContactBook.remember` returned it earlier in this
        transaction, so one decision's messages to one number look the contact up once."""
        return self.enqueue_message(session, natural_key=natural_key, rule_id=rule_id, resource_ref=resource_ref,
                                    patient_ref=patient_ref, recipient=recipient,
                                    message={"type": "template", "template": template}, due_at=due_at,
                                    recipient_key=recipient_key)

    def enqueue_message(self, session: Session, *, natural_key: str, rule_id: str, resource_ref: str,
                        patient_ref: str, recipient: str, message: dict[str, Any], due_at: datetime,
                        purpose: str = "notify", fallback: dict[str, Any] | None = None,
                        recipient_key: bytes | None = None) -> bool:
        """Queues any message body (``{"type": "text", "text": …}``, ``interactive``, ``template``).
        A free-form body needs the 24-hour window; ``fallback`` is the template sent when it is closed."""
        row = self.message_row(natural_key=natural_key, rule_id=rule_id, resource_ref=resource_ref,
                               patient_ref=patient_ref, recipient=recipient, message=message, due_at=due_at,
                               purpose=purpose, fallback=fallback,
                               recipient_key=recipient_key or self.contacts.remember(session, patient_ref, recipient))
        return insert_ignoring_duplicates(session, OutboxMessage, [row], "natural_key") == 1

    def message_row(self, *, natural_key: str, rule_id: str, resource_ref: str, patient_ref: str, recipient: str,
                    message: dict[str, Any], due_at: datetime, recipient_key: bytes | None, purpose: str = "notify",
                    fallback: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``outbox`` row of a queued message, the recipient encrypted (bound to the key), for a
        batch's one INSERT (:mod:`adapter.scheduling.batch_facts`) or :meth:`enqueue_message`'s."""
        now = utcnow()
        return {"natural_key": natural_key, "rule_id": rule_id, "resource_ref": resource_ref,
                "patient_ref": patient_ref,
                "recipient_enc": self.cipher.encrypt(recipient, context=recipient_context(natural_key)),
                "recipient_key": recipient_key, "payload": seal_body(self.cipher, natural_key, message),
                **body_columns(message), "purpose": purpose,
                "fallback": seal_body(self.cipher, natural_key, {"type": "template", "template": fallback})
                if fallback else None,
                "state": "queued", "due_at": due_at, "attempts": 0, "created_at": now, "updated_at": now}

    @staticmethod
    def exists(session: Session, natural_key: str) -> bool:
        found = session.exec(select(OutboxMessage.id).where(col(OutboxMessage.natural_key) == natural_key))
        return found.first() is not None

    @staticmethod
    def existing(session: Session, natural_keys: list[str]) -> set[str]:
        """Which of ``natural_keys`` have a row (any state): one query for a set of candidate messages."""
        if not natural_keys:
            return set()
        found = session.exec(select(OutboxMessage.natural_key).where(col(OutboxMessage.natural_key).in_(natural_keys)))
        return set(found.all())

    def queue_tail(self, session: Session, recipient_key: bytes) -> datetime | None:
        """The latest due time of the messages queued to this number for about now: those held back by
        pacing (at most one pair interval ahead); a reminder due tomorrow is not in the way."""
        horizon = utcnow() + self.rules.pair_interval
        return session.exec(select(func.max(OutboxMessage.due_at)).where(
            col(OutboxMessage.recipient_key) == recipient_key, col(OutboxMessage.state) == "queued",
            col(OutboxMessage.due_at) <= horizon)).first()

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

    @staticmethod
    def suppress_queued(session: Session, patient_refs: list[str], reason: str) -> int:
        """Stops every message still waiting for these patients (STOP): they will not be sent."""
        if not patient_refs:
            return 0
        rows = list(session.exec(select(OutboxMessage).where(
            col(OutboxMessage.patient_ref).in_(patient_refs), col(OutboxMessage.state) == "queued",
            col(OutboxMessage.purpose) != "consent").with_for_update()))
        for row in rows:
            row.state, row.dead_reason, row.updated_at = "suppressed", reason[:200], utcnow()
            session.add(row)
        return len(rows)

    # --- dispatching

    def claim_due(self, limit: int, now: datetime | None = None) -> list[ClaimedMessage]:
        """Claims due rows under WhatsApp's rules (:func:`adapter.outbox.claims.claim_due`)."""
        return claims.claim_due(self.engine, self.cipher, self.rules, limit, now)

    def record(self, outcomes: list[SendOutcome]) -> None:
        """Records a batch of send outcomes (:func:`adapter.outbox.results.record_outcomes`)."""
        results.record_outcomes(self.engine, self.rules.pair_interval, outcomes)

    def pending_hooks(self, limit: int = 50) -> list[OutboxMessage]:
        return letters.pending_hooks(self.engine, limit)

    def hook_done(self, outbox_id: int, state: str) -> None:
        """Marks a dead letter's fallback hook ``state`` (:func:`adapter.outbox.dead_letters.hook_done`)."""
        letters.hook_done(self.engine, outbox_id, state)

    # --- operators

    def dead_letters(self, limit: int = 100) -> list[OutboxMessage]:
        return letters.dead_letters(self.engine, limit)

    def redrive(self, outbox_id: int) -> str:
        """Puts a dead letter back in the queue; says why not when it cannot be."""
        return letters.redrive(self.engine, outbox_id)


def notified_language(session: Session, phone_index: bytes, default: str) -> str:
    """The template language of the latest notification to this number (chat replies excluded)."""
    code = session.exec(select(OutboxMessage.template_language).where(
        col(OutboxMessage.recipient_key) == phone_index, col(OutboxMessage.purpose) == "notify",
        col(OutboxMessage.payload).is_not(None)).order_by(col(OutboxMessage.id).desc()).limit(1)).first()
    return str(code) if code else default
