"""Claiming due outbox rows for sending, under WhatsApp's rules, in one transaction.

Due rows, and rows whose sending lease expired or was released (an instance died mid-send:
:mod:`adapter.ops.liveness`), are claimed with ``SKIP LOCKED``, so several instances share the work;
each claim names its instance in ``lease_owner`` and records a
:class:`~adapter.outbox.tables.SendAttempt` before the call, because the Cloud API has no idempotency
key (DESIGN.md, invariants). So a row taken over while still ``sending`` is in doubt: it is skipped
if a stored status names it by our ``biz_opaque_callback_data`` (it was sent; applying that status
settles it), and only otherwise sent again. In the same transaction: opted-out patients get nothing
but the STOP/START confirmation; one recipient gets at most one message per pair interval (Meta's pair rate
limit, about one per 6 s) without holding anyone else back; a free-form message outside the 24-hour
customer service window becomes its fallback template; and only approved templates go out
(:mod:`adapter.outbox.templates`). Held-back rows get a later ``due_at`` (or are suppressed) and no
attempt; they are not audited as disclosures: nothing left the building.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select as select_columns
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from adapter.ops.alerts import raise_alert
from adapter.outbox import appointment_gate
from adapter.outbox.batch_writes import insert_attempts, take_paces, write_back
from adapter.outbox.encoding import body_columns, callback_data, open_body, recipient_context, seal_body
from adapter.outbox.tables import OUTBOX_CLAIMABLE, OutboxMessage, RecipientPace, WhatsAppStatus
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
# What the claim may change on a row; all of them written back, for every row, with one UPDATE.
_CLAIM_COLUMNS = ("state", "due_at", "lease_until", "updated_at", "attempts", "payload", "body_type", "template_name",
                  "template_language", "dead_reason", "lease_owner")
_status = table_of(WhatsAppStatus)
_pace = table_of(RecipientPace)


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
    resource_ref: str | None = None  # what the message is about: its logs' event id (adapter.ops.logs)


@dataclass(frozen=True)
class ClaimRules:
    """WhatsApp's rules applied when claiming (settings: ``whatsapp_pair_interval_seconds``, …)."""

    pair_interval: timedelta = timedelta(seconds=6)
    templates: TemplateGate = field(default_factory=TemplateGate)
    send_lease: timedelta = SEND_LEASE  # settings: send_lease_seconds (an instance that dies mid-send)
    owner: str | None = None  # this boot's id, written in lease_owner (adapter.ops.liveness)
    # settings: in_doubt_grace_seconds; how long a message taken over in doubt waits again for its status
    in_doubt_grace: timedelta = timedelta(seconds=5)
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


def claim_due(engine: Engine, cipher: FieldCipher, rules: ClaimRules, limit: int,
              now: datetime | None = None) -> list[ClaimedMessage]:
    """Claims due rows, and rows whose sending lease expired (a crash mid-send), recording an
    attempt for each before any call is made. Rows held back by WhatsApp's rules get a later
    ``due_at`` (or are suppressed) in the same transaction, without an attempt.

    In sets, whatever the batch's size: the claim, one read per table the rules need, the rules applied
    in memory, then one conditional take of the recipients' pace slots, one UPDATE of the claimed rows
    and one INSERT of the attempts (:mod:`adapter.outbox.batch_writes`)."""
    now = now or utcnow()
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
        sent_already = _sent_in_doubt(session, rows)
        _end_provisional_paces(session, [row for row in rows if row.id not in sent_already], rules, now)
        batch = _BatchFacts.load(session, rows, rules)
        with session.no_autoflush:  # the rows change in memory and are written once, by write_back
            for row in rows:
                if row.id in sent_already:  # its status settles it (adapter.outbox.statuses): never resent
                    row.lease_until, row.lease_owner = now + rules.in_doubt_grace, None
            passing = [row for row in rows if row.id not in sent_already
                       and not _hold_back(session, cipher, rules, row, batch, now)]
            taken = _paced(session, rules, passing, now)
            for row in taken:
                row.state, row.lease_until, row.updated_at = "sending", now + rules.send_lease, now
                row.lease_owner = rules.owner
                row.attempts += 1
            write_back(session, rows, _CLAIM_COLUMNS)
        attempt_ids = insert_attempts(session, [
            {"outbox_id": row.id, "attempt_no": row.attempts, "started_at": now, "outcome": "started"}
            for row in taken])
        return [_claimed(cipher, rules, row, attempt_ids[row.id or 0], now) for row in taken]


def _sent_in_doubt(session: Session, rows: list[OutboxMessage]) -> set[int]:
    """The rows of the batch in doubt — still ``sending``: an attempt was recorded before the call and
    its instance died or its lease ran out before recording what happened, so the message may have
    left — that a stored status (applied or not) names by our callback data: those were sent. One
    query for the batch, on the index of statuses by callback data."""
    doubtful = {callback_data(row.id or 0): row.id or 0 for row in rows if row.state == "sending"}
    if not doubtful:
        return set()
    named = session.execute(select_columns(_status.c.callback_data)
                            .where(_status.c.callback_data.in_(list(doubtful))))
    return {doubtful[data] for data in named.scalars()}


def _end_provisional_paces(session: Session, rows: list[OutboxMessage], rules: ClaimRules, now: datetime) -> None:
    """A message taken over in doubt still holds its recipient's provisional pace (set at its claim to
    last the lease, until the send reports): no report will come, so that reservation ends now. One
    UPDATE; a pace no later than one interval ahead is a reported send's and stays."""
    keys = {row.recipient_key for row in rows if row.state == "sending" and row.recipient_key is not None}
    if keys and rules.pair_interval:
        session.execute(update(_pace).where(_pace.c.recipient_key.in_(sorted(keys)),
                                            _pace.c.next_send_at > now + rules.pair_interval)
                        .values(next_send_at=now))


def _claimed(cipher: FieldCipher, rules: ClaimRules, row: OutboxMessage, attempt_id: int,
             now: datetime) -> ClaimedMessage:
    request = open_body(cipher, row.natural_key, row.payload)
    request.update({
        "messaging_product": "whatsapp", "recipient_type": "individual",
        "to": cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key)),
        "biz_opaque_callback_data": callback_data(row.id or 0),
    })
    return ClaimedMessage(row.id or 0, attempt_id, row.attempts, request, request.get("type") != "template",
                          now + rules.send_lease / 2, row.resource_ref)


def _set_body(row: OutboxMessage, sealed: str | None, body: dict[str, Any]) -> None:
    row.payload = sealed
    for column, value in body_columns(body).items():
        setattr(row, column, value)


def _later(row: OutboxMessage, at: datetime, now: datetime) -> bool:
    row.state, row.due_at, row.lease_until, row.updated_at = "queued", at, None, now
    return True


def _suppress(row: OutboxMessage, state: str, reason: str, now: datetime) -> bool:
    row.state, row.dead_reason, row.lease_until, row.updated_at = state, reason, None, now
    return True


def _paced(session: Session, rules: ClaimRules, rows: list[OutboxMessage], now: datetime) -> list[OutboxMessage]:
    """Takes the pace slots of the rows' recipients in one statement (each recipient at most once: a
    second row to one recipient was held by :func:`_hold_back`); a row whose slot another instance took
    meanwhile waits one interval. Returns the rows that go."""
    if not rules.pair_interval:  # a zero interval turns pacing off
        return rows
    until = now + rules.send_lease + rules.pair_interval  # provisional, until the send reports when it left
    taken = take_paces(session, [row.recipient_key for row in rows if row.recipient_key is not None], until, now)
    going = []
    for row in rows:
        if row.recipient_key is None or row.recipient_key in taken:
            going.append(row)
        else:  # another instance claimed this recipient meanwhile
            _later(row, now + rules.pair_interval, now)
    return going


def _hold_back(session: Session, cipher: FieldCipher, rules: ClaimRules, row: OutboxMessage, batch: _BatchFacts,
               now: datetime) -> bool:
    """Applies consent, pacing, the window and template review to one row, in memory; True if it waits.
    A row that passes reserves its recipient's pace in ``batch`` (taken for real by :func:`_paced`), so
    a second row to that recipient in this batch waits, as it would after the first one's take."""
    if row.patient_ref in batch.opted_out and row.purpose != "consent":
        return _suppress(row, "suppressed", "patient opted out", now)
    if appointment_gate.started(row, now):  # about an appointment to come, and it has begun
        return _suppress(row, "suppressed", appointment_gate.STARTED, now)
    gate = rules.reminder_gate(row.natural_key, now) if rules.reminder_gate else None
    if isinstance(gate, datetime):
        return _later(row, gate, now)
    if gate is not None:
        return _suppress(row, "suppressed", gate, now)
    key = row.recipient_key if rules.pair_interval else None  # a zero interval turns pacing off
    if key is not None:
        free_at = batch.pace.get(key)
        if free_at is not None and free_at > now:
            # Look again within one interval: a provisional pace ends early when its send reports.
            return _later(row, min(free_at, now + rules.pair_interval), now)
    # The body's plain columns say what it is; it is opened only to switch it (adapter.outbox.encoding),
    # or to name the template a re-plan moved in (adapter.outbox.results.replan_as_template).
    if row.body_type == "template" and row.template_name is None and row.payload:
        _set_body(row, row.payload, open_body(cipher, row.natural_key, row.payload))
    if row.body_type != "template" and not window_open(batch.last_inbound.get(row.recipient_key or b""), now):
        if row.fallback is None:
            return _suppress(row, "dead", "24-hour window closed and no template to fall back on", now)
        _set_body(row, row.fallback, open_body(cipher, row.natural_key, row.fallback))
    if row.body_type == "template":
        template = {"name": row.template_name, "language": {"code": row.template_language}}
        verdict = batch.templates.check(template)
        if verdict.hold:
            raise_alert(session, f"template:{verdict.reason}", "template_not_approved", verdict.reason)
            return _later(row, now + TEMPLATE_HOLD, now)
        if verdict.template is not template:
            raise_alert(session, f"template_fallback:{verdict.reason}", "template_fallback_used", verdict.reason)
            body = {"type": "template", "template": verdict.template}
            _set_body(row, seal_body(cipher, row.natural_key, body), body)
    if key is not None:
        batch.pace[key] = now + rules.send_lease + rules.pair_interval
    return False
