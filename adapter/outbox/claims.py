"""Claiming due outbox rows for sending, under WhatsApp's rules, in one transaction.

Due rows, and rows whose sending lease expired (an instance died mid-send), are claimed with
``SKIP LOCKED``, so several instances share the work; each claim records a
:class:`~adapter.outbox.tables.SendAttempt` before the call, because the Cloud API has no idempotency
key (DESIGN.md, invariants). In the same transaction: opted-out patients get nothing but the
STOP/START confirmation; one recipient gets at most one message per pair interval (Meta's pair rate
limit, about one per 6 s) without holding anyone else back; a free-form message outside the 24-hour
customer service window becomes its fallback template; and only approved templates go out
(:mod:`adapter.outbox.templates`). Held-back rows get a later ``due_at`` (or are suppressed) and no
attempt; they are not audited as disclosures: nothing left the building.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from adapter.ops.alerts import raise_alert
from adapter.outbox.encoding import callback_data, compact_json, recipient_context
from adapter.outbox.tables import OUTBOX_CLAIMABLE, OutboxMessage, RecipientPace, SendAttempt
from adapter.outbox.templates import TemplateGate, TemplateView
from adapter.recipients.consent import OPTED_OUT
from adapter.recipients.contacts import ContactBook, window_open
from adapter.recipients.tables import ConsentRecord
from adapter.security.crypto import FieldCipher
from adapter.storage.claimable import in_states, indexed_by
from adapter.storage.db import table_of, transaction, utcnow

SEND_LEASE = timedelta(minutes=2)
TEMPLATE_HOLD = timedelta(minutes=5)
_CLAIMABLE = indexed_by(OutboxMessage, "ix_outbox_claimable")


@dataclass(frozen=True)
class ClaimedMessage:
    outbox_id: int
    attempt_id: int
    attempt_no: int
    request: dict[str, Any]  # the Cloud API request body, recipient included: never log it
    free_form: bool = False
    # Not sent by then (half the lease), the dispatcher leaves it for the next claim: a send that starts
    # later could outlive the lease, and another instance may then claim the row and send it again.
    send_by: datetime | None = None


@dataclass(frozen=True)
class ClaimRules:
    """WhatsApp's rules applied when claiming (settings: ``whatsapp_pair_interval_seconds``, …)."""

    pair_interval: timedelta = timedelta(seconds=6)
    templates: TemplateGate = field(default_factory=TemplateGate)
    send_lease: timedelta = SEND_LEASE  # settings: send_lease_seconds (an instance that dies mid-send)
    # Reminders re-checked when they come due (adapter.scheduling.reminder_gate):
    # None send, datetime wait, str suppress.
    reminder_gate: Callable[[str, datetime], datetime | str | None] | None = None


@dataclass
class _BatchFacts:
    """What the rules need about one claimed batch, read with one query each."""

    opted_out: set[str]
    pace: dict[bytes, datetime]
    last_inbound: dict[bytes, datetime]
    templates: TemplateView

    @classmethod
    def load(cls, session: Session, rows: list[OutboxMessage], rules: ClaimRules) -> _BatchFacts:
        patients = list({row.patient_ref for row in rows})
        keys = list({row.recipient_key for row in rows if row.recipient_key is not None})
        opted_out = set(session.exec(select(ConsentRecord.patient_ref).where(
            col(ConsentRecord.patient_ref).in_(patients), col(ConsentRecord.status) == OPTED_OUT)).all())
        pace = dict(session.exec(select(RecipientPace.recipient_key, RecipientPace.next_send_at)
                                 .where(col(RecipientPace.recipient_key).in_(keys))).all()) if keys else {}
        return cls(opted_out, pace, ContactBook.last_inbound(session, keys), rules.templates.view(session))


def _take_pace(session: Session, key: bytes, until: datetime, now: datetime) -> bool:
    """Takes the recipient's pace slot only if it is free, in one statement (insert, or update where
    ``next_send_at <= now``): two instances claiming messages to one recipient at once cannot both pass
    the pair-interval check, as a read-then-write could. On PostgreSQL the loser waits for the winner's
    commit, re-checks the condition against the committed row, and gets no row back."""
    table = table_of(RecipientPace)
    values = {"recipient_key": key, "next_send_at": until}
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = pg_insert(table).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["recipient_key"], set_={"next_send_at": statement.excluded.next_send_at},
        where=table.c.next_send_at <= now)
    return session.execute(statement.returning(table.c.recipient_key)).first() is not None


def claim_due(engine: Engine, cipher: FieldCipher, rules: ClaimRules, limit: int,
              now: datetime | None = None) -> list[ClaimedMessage]:
    """Claims due rows, and rows whose sending lease expired (a crash mid-send), recording an
    attempt for each before any call is made. Rows held back by WhatsApp's rules get a later
    ``due_at`` (or are suppressed) in the same transaction, without an attempt."""
    now = now or utcnow()
    claimed: list[ClaimedMessage] = []
    with transaction(engine) as session:
        # Reads the partial index of in-flight rows (ix_outbox_claimable) in due order, up to ``now``:
        # no sort, no final row. ``due_at <= now`` holds for an expired lease too: a row becomes
        # ``sending`` only when claimed due, and keeps its ``due_at`` until it leaves that state.
        rows = list(session.exec(
            select(_CLAIMABLE)
            .where(in_states(_CLAIMABLE.state, OUTBOX_CLAIMABLE), col(_CLAIMABLE.due_at) <= now,
                   or_(col(_CLAIMABLE.state) == "queued", col(_CLAIMABLE.lease_until) < now))
            .order_by(col(_CLAIMABLE.due_at), col(_CLAIMABLE.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        ))
        if not rows:
            return []
        batch = _BatchFacts.load(session, rows, rules)
        taken: list[tuple[OutboxMessage, SendAttempt]] = []
        for row in rows:
            if _hold_back(session, rules, row, batch, now):
                continue
            row.state, row.lease_until, row.updated_at = "sending", now + rules.send_lease, now
            row.attempts += 1
            attempt = SendAttempt(outbox_id=row.id or 0, attempt_no=row.attempts, started_at=now)
            session.add(row)
            session.add(attempt)
            taken.append((row, attempt))
        session.flush()
        for row, attempt in taken:
            request = json.loads(row.payload or "{}")
            request.update({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key)),
                "biz_opaque_callback_data": callback_data(row.id or 0),
            })
            claimed.append(ClaimedMessage(row.id or 0, attempt.id or 0, row.attempts, request,
                                          request.get("type") != "template", now + rules.send_lease / 2))
    return claimed


def _hold_back(session: Session, rules: ClaimRules, row: OutboxMessage, batch: _BatchFacts, now: datetime) -> bool:
    """Applies consent, pacing, the window and template review to one row; True if it waits."""
    def later(at: datetime) -> bool:
        row.state, row.due_at, row.lease_until, row.updated_at = "queued", at, None, now
        session.add(row)
        return True

    if row.patient_ref in batch.opted_out and row.purpose != "consent":
        row.state, row.dead_reason, row.lease_until, row.updated_at = "suppressed", "patient opted out", None, now
        session.add(row)
        return True
    gate = rules.reminder_gate(row.natural_key, now) if rules.reminder_gate else None
    if isinstance(gate, datetime):
        return later(gate)
    if gate is not None:
        row.state, row.dead_reason, row.lease_until, row.updated_at = "suppressed", gate, None, now
        session.add(row)
        return True
    key = row.recipient_key if rules.pair_interval else None  # a zero interval turns pacing off
    if key is not None:
        free_at = batch.pace.get(key)
        if free_at is not None and free_at > now:
            # Look again within one interval: a provisional pace ends early when its send reports.
            return later(min(free_at, now + rules.pair_interval))
    payload = json.loads(row.payload or "{}")
    if payload.get("type") != "template" and not window_open(batch.last_inbound.get(key or b""), now):
        if row.fallback is None:
            row.state, row.lease_until, row.updated_at = "dead", None, now
            row.dead_reason = "24-hour window closed and no template to fall back on"
            session.add(row)
            return True
        row.payload, payload = row.fallback, json.loads(row.fallback)
    if payload.get("type") == "template":
        verdict = batch.templates.check(payload["template"])
        if verdict.hold:
            raise_alert(session, f"template:{verdict.reason}", "template_not_approved", verdict.reason)
            return later(now + TEMPLATE_HOLD)
        if verdict.template is not payload["template"]:
            raise_alert(session, f"template_fallback:{verdict.reason}", "template_fallback_used", verdict.reason)
            row.payload = compact_json({"type": "template", "template": verdict.template})
    if key is not None:  # provisional, until the send reports when it left (see adapter.outbox.results)
        until = now + rules.send_lease + rules.pair_interval
        if not _take_pace(session, key, until, now):  # another instance claimed this recipient meanwhile
            return later(now + rules.pair_interval)
        batch.pace[key] = until
    return False
