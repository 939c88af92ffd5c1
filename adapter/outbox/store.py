"""The outbox: one row per message, its state machine, claims, attempts and dead letters.

States: ``queued`` → ``sending`` (claimed, leased) → ``sent``; or back to ``queued`` with a later
``due_at`` (retry, pacing, a re-plan as a template); ``dead`` (a visible dead letter an admin can
re-drive); ``suppressed`` (the patient opted out before it went). Each claim records a
:class:`~adapter.outbox.tables.SendAttempt` before the call, because the Cloud API has no idempotency
key; the outbox id travels as ``biz_opaque_callback_data`` so a status can reconcile a send
whose answer was lost (DESIGN.md, invariants).

Claiming applies WhatsApp's rules in the same transaction (:meth:`OutboxStore.claim_due`): opted-out
patients get nothing but the STOP/START confirmation; one recipient gets at most one message per
pair interval (Meta's pair rate limit, about one per 6 s) without holding anyone else back; a
free-form message outside the 24-hour customer service window becomes its fallback template; and
only approved templates go out (:mod:`adapter.outbox.templates`).

Every attempt that reached the Cloud API is audited in the transaction that records its result
(:meth:`OutboxStore.record`, :func:`disclosure_entry`): a send is a disclosure of the patient's
information to a third party (IHE BALP PrivacyDisclosure at the source, DICOM 110106 "Export",
action R as in DICOM PS3.15 A.5.3.5 and BALP's example: the record is read out and sent). Consent-
suppressed and paced rows are not audited as disclosures: nothing left the building.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, or_, select

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome
from adapter.audit.trail import record as audit_record
from adapter.ops.alerts import raise_alert
from adapter.outbox.circuit_breaker import pause_sending
from adapter.outbox.tables import OutboxMessage, RecipientPace, SendAttempt
from adapter.outbox.templates import TemplateGate, TemplateView
from adapter.recipients.consent import OPTED_OUT
from adapter.recipients.contacts import ContactBook, window_open
from adapter.recipients.tables import ConsentRecord
from adapter.storage.db import insert_ignoring_duplicates, table_of, transaction, upsert, utcnow

SEND_LEASE = timedelta(minutes=2)
RECORD_TRIES = 3
RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure
TEMPLATE_HOLD = timedelta(minutes=5)
CALLBACK_PREFIX = "outbox:"


def recipient_context(natural_key: str) -> str:
    return f"outbox.recipient_enc:{natural_key}"


def callback_data(outbox_id: int) -> str:
    return f"{CALLBACK_PREFIX}{outbox_id}"


def outbox_id_from_callback(data: str | None) -> int | None:
    if data and data.startswith(CALLBACK_PREFIX) and data[len(CALLBACK_PREFIX):].isdigit():
        return int(data[len(CALLBACK_PREFIX):])
    return None


def _compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


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


@dataclass(frozen=True)
class SendOutcome:
    outbox_id: int
    attempt_id: int
    result: Literal["sent", "retry", "ambiguous", "dead", "replan"]
    wamid: str | None = None
    retry_at: datetime | None = None
    error_code: int | None = None
    error_class: str | None = None
    dead_reason: str | None = None
    pause_reason: str | None = None  # an account-level error: pause all sending until an admin resumes
    # When the answer came back: Meta received the request before then, so pacing the next message to
    # this recipient from here keeps them at least the pair interval apart as Meta sees them.
    answered_at: datetime | None = None
    attempted: bool = True  # False when the request was never made (sending paused): not a disclosure


# A send's result as an audit outcome: accepted; will be tried again (or reconciled by a status); given up.
_DISCLOSURE_OUTCOME = {"sent": Outcome.SUCCESS, "retry": Outcome.MINOR_FAILURE, "ambiguous": Outcome.MINOR_FAILURE,
                       "replan": Outcome.MINOR_FAILURE, "dead": Outcome.SERIOUS_FAILURE}


def disclosure_entry(row: OutboxMessage | None, outbox_id: int, attempt_no: int | None, result: str, *,
                     wamid: str | None = None, error_code: int | None = None, error_class: str | None = None,
                     via: str | None = None) -> AuditEntry:
    """The audit entry of one send attempt (BALP PrivacyDisclosure): what went (template or message
    type, rule, purpose), for which patient, under which Meta message id; never the number or the text."""
    payload: dict[str, Any] = json.loads(row.payload) if row is not None and row.payload else {}
    template = payload.get("template") if payload.get("type") == "template" else None
    detail: dict[str, str | int | None] = {
        "outbox": outbox_id, "attempt": attempt_no, "result": result, "type": payload.get("type"),
        "template": template.get("name") if isinstance(template, dict) else None,
        "rule": row.rule_id if row is not None else None, "purpose": row.purpose if row is not None else None}
    if error_code is not None or error_class is not None:
        detail.update(error_code=error_code, error_class=error_class)
    if via is not None:
        detail["via"] = via
    return AuditEntry(kind=Kind.DISCLOSURE, action=Action.READ,
                      outcome=_DISCLOSURE_OUTCOME.get(result, Outcome.SUCCESS), agent="system",
                      patient_ref=row.patient_ref if row is not None else None,
                      entity_ref=f"message/{wamid}" if wamid else f"outbox/{outbox_id}",
                      detail={key: value for key, value in detail.items() if value is not None})


def lock_rows_in_order(session: Session, outbox_ids: list[int], wamids: list[str] | None = None) -> None:
    """Locks these outbox rows in id order, so two instances' transactions over overlapping rows wait for
    each other instead of deadlocking (PostgreSQL; SQLite has one writer)."""
    if session.get_bind().dialect.name != "postgresql" or not (outbox_ids or wamids):
        return
    condition: ColumnElement[bool] = col(OutboxMessage.id).in_(outbox_ids)
    if wamids:
        condition = or_(condition, col(OutboxMessage.wamid).in_(wamids))
    session.exec(select(OutboxMessage.id).where(condition).order_by(col(OutboxMessage.id)).with_for_update()).all()


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


class OutboxStore:
    def __init__(self, engine: Engine, contacts: ContactBook, rules: ClaimRules | None = None) -> None:
        self.engine = engine
        self.contacts = contacts
        self.cipher = contacts.cipher
        self.rules = rules or ClaimRules()

    # --- writing (inside the decide step's or the inbound step's transaction)

    def enqueue(self, session: Session, *, natural_key: str, rule_id: str, resource_ref: str,
                patient_ref: str, recipient: str, template: dict[str, Any], due_at: datetime) -> bool:
        """Queues a template message; False when the natural key exists (effectively-once)."""
        return self.enqueue_message(session, natural_key=natural_key, rule_id=rule_id, resource_ref=resource_ref,
                                    patient_ref=patient_ref, recipient=recipient,
                                    message={"type": "template", "template": template}, due_at=due_at)

    def enqueue_message(self, session: Session, *, natural_key: str, rule_id: str, resource_ref: str,
                        patient_ref: str, recipient: str, message: dict[str, Any], due_at: datetime,
                        purpose: str = "notify", fallback: dict[str, Any] | None = None) -> bool:
        """Queues any message body (``{"type": "text", "text": …}``, ``interactive``, ``template``).
        A free-form body needs the 24-hour window; ``fallback`` is the template sent when it is closed."""
        now = utcnow()
        row = {"natural_key": natural_key, "rule_id": rule_id, "resource_ref": resource_ref,
               "patient_ref": patient_ref,
               "recipient_enc": self.cipher.encrypt(recipient, context=recipient_context(natural_key)),
               "recipient_key": self.contacts.remember(session, patient_ref, recipient),
               "payload": _compact(message), "purpose": purpose,
               "fallback": _compact({"type": "template", "template": fallback}) if fallback else None,
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
        """Claims due rows, and rows whose sending lease expired (a crash mid-send), recording an
        attempt for each before any call is made. Rows held back by WhatsApp's rules get a later
        ``due_at`` (or are suppressed) in the same transaction, without an attempt."""
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
            if not rows:
                return []
            batch = _BatchFacts.load(session, rows, self.rules)
            taken: list[tuple[OutboxMessage, SendAttempt]] = []
            for row in rows:
                if self._hold_back(session, row, batch, now):
                    continue
                row.state, row.lease_until, row.updated_at = "sending", now + self.rules.send_lease, now
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
                    "to": self.cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key)),
                    "biz_opaque_callback_data": callback_data(row.id or 0),
                })
                claimed.append(ClaimedMessage(row.id or 0, attempt.id or 0, row.attempts, request,
                                              request.get("type") != "template", now + self.rules.send_lease / 2))
        return claimed

    def _hold_back(self, session: Session, row: OutboxMessage, batch: _BatchFacts, now: datetime) -> bool:
        """Applies consent, pacing, the window and template review to one row; True if it waits."""
        def later(at: datetime) -> bool:
            row.state, row.due_at, row.lease_until, row.updated_at = "queued", at, None, now
            session.add(row)
            return True

        if row.patient_ref in batch.opted_out and row.purpose != "consent":
            row.state, row.dead_reason, row.lease_until, row.updated_at = "suppressed", "patient opted out", None, now
            session.add(row)
            return True
        gate = self.rules.reminder_gate(row.natural_key, now) if self.rules.reminder_gate else None
        if isinstance(gate, datetime):
            return later(gate)
        if gate is not None:
            row.state, row.dead_reason, row.lease_until, row.updated_at = "suppressed", gate, None, now
            session.add(row)
            return True
        key = row.recipient_key if self.rules.pair_interval else None  # a zero interval turns pacing off
        if key is not None:
            free_at = batch.pace.get(key)
            if free_at is not None and free_at > now:
                # Look again within one interval: a provisional pace ends early when its send reports.
                return later(min(free_at, now + self.rules.pair_interval))
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
                row.payload = _compact({"type": "template", "template": verdict.template})
        if key is not None:  # provisional, until the send reports when it left (see ``record``)
            until = now + self.rules.send_lease + self.rules.pair_interval
            if not _take_pace(session, key, until, now):  # another instance claimed this recipient meanwhile
                return later(now + self.rules.pair_interval)
            batch.pace[key] = until
        return False

    def record(self, outcomes: list[SendOutcome]) -> None:
        """Applies a batch of send outcomes in one transaction, with one audit entry per attempt made
        (written once for the batch, in the same transaction). Several instances: the rows are locked in id
        order (as :func:`adapter.outbox.statuses.apply_pending` does), and a deadlock victim tries again, because a
        lost outcome would leave a sent message to be claimed and sent again after its lease."""
        for attempt_no in range(1, RECORD_TRIES + 1):
            try:
                self._record(sorted(outcomes, key=lambda outcome: outcome.outbox_id))
                return
            except DBAPIError as error:
                if attempt_no == RECORD_TRIES or getattr(error.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                    raise

    def _record(self, outcomes: list[SendOutcome]) -> None:
        now = utcnow()
        with transaction(self.engine) as session:
            audit: list[AuditEntry] = []
            lock_rows_in_order(session, [outcome.outbox_id for outcome in outcomes])
            for outcome in outcomes:
                row = session.get(OutboxMessage, outcome.outbox_id)
                attempt = session.get(SendAttempt, outcome.attempt_id)
                settled = (row is not None and outcome.wamid is not None and row.wamid == outcome.wamid
                           and row.state != "sending")  # a status got here first and audited the send
                if outcome.attempted and not settled:  # before the row changes: what went, not its re-plan
                    audit.append(disclosure_entry(
                        row, outcome.outbox_id, attempt.attempt_no if attempt is not None else None, outcome.result,
                        wamid=outcome.wamid, error_code=outcome.error_code, error_class=outcome.error_class))
                if attempt is not None:
                    attempt.finished_at, attempt.outcome = now, outcome.result
                    attempt.error_code, attempt.error_class = outcome.error_code, outcome.error_class
                    session.add(attempt)
                if outcome.pause_reason:
                    pause_sending(session, outcome.pause_reason)
                if row is not None and row.recipient_key and outcome.answered_at and self.rules.pair_interval:
                    # Pace from the answer, not from the claim (the rate limiter may have held the
                    # request): Meta counts what reaches it. A refused request reached nobody.
                    reached = outcome.result in ("sent", "ambiguous")
                    upsert(session, RecipientPace, {
                        "recipient_key": row.recipient_key,
                        "next_send_at": outcome.answered_at + self.rules.pair_interval if reached else now},
                        "recipient_key", ["next_send_at"])
                if row is None or row.state != "sending":
                    continue  # a status webhook reconciled it meanwhile, or an admin changed it
                if attempt is not None and row.attempts != attempt.attempt_no and outcome.result != "sent":
                    continue  # our lease expired and another instance claimed it again: its attempt decides
                row.updated_at, row.lease_until = now, None
                row.last_error_code, row.last_error_class = outcome.error_code, outcome.error_class
                if outcome.result == "sent":
                    row.state, row.wamid, row.sent_at = "sent", outcome.wamid, now
                elif outcome.result == "dead":
                    self.bury(session, row, outcome.dead_reason or "dead", outcome.error_class)
                elif outcome.result == "replan":
                    self.replan_as_template(session, row)
                else:
                    row.state, row.due_at = "queued", outcome.retry_at or now
                session.add(row)
            audit_record(session, *audit, at=now)

    @staticmethod
    def bury(session: Session, row: OutboxMessage, reason: str, error_class: str | None) -> None:
        """Dead-letters a row; undeliverable ones go to the fallback hook, configuration errors to a person."""
        row.state, row.dead_reason, row.lease_until, row.updated_at = "dead", reason[:200], None, utcnow()
        if error_class == "UndeliverableError":
            row.hook_state = "pending"
        elif error_class == "ConfigurationError":
            raise_alert(session, f"configuration:{row.last_error_code}:{row.rule_id}", "configuration_error",
                        f"message {row.id} ({row.rule_id}) refused by Meta: {reason}")
        session.add(row)

    @staticmethod
    def replan_as_template(session: Session, row: OutboxMessage) -> None:
        """Meta said the 24-hour window is closed (131047): send the fallback template instead, now."""
        if row.fallback is None or row.payload == row.fallback:
            OutboxStore.bury(session, row, "24-hour window closed and no template to fall back on", None)
            return
        row.payload, row.state, row.due_at, row.wamid, row.lease_until = row.fallback, "queued", utcnow(), None, None
        row.delivery_status = None
        session.add(row)

    @staticmethod
    def settle_by_status(row: OutboxMessage, wamid: str) -> bool:
        """A status proved that a send whose answer was lost reached Meta: mark it sent instead of
        resending it. Returns whether the row changed."""
        if row.wamid is not None or row.state not in ("queued", "sending"):
            return False
        row.state, row.wamid, row.sent_at, row.lease_until = "sent", wamid, utcnow(), None
        return True

    def pending_hooks(self, limit: int = 50) -> list[OutboxMessage]:
        with Session(self.engine) as session:
            return list(session.exec(select(OutboxMessage).where(col(OutboxMessage.hook_state) == "pending")
                                     .order_by(col(OutboxMessage.id)).limit(limit)))

    def hook_done(self, outbox_id: int, state: str) -> None:
        """Marks a dead letter's fallback hook ``state``; ``done`` means the hook received the patient
        reference, which is a disclosure to another system and is audited as one (same transaction)."""
        with transaction(self.engine) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is not None:
                row.hook_state = state
                session.add(row)
                if state == "done":
                    audit_record(session, AuditEntry(
                        kind=Kind.DISCLOSURE, action=Action.READ, agent="system", patient_ref=row.patient_ref,
                        entity_ref=f"outbox/{outbox_id}", detail={"outbox": outbox_id, "via": "fallback-hook",
                                                                  "rule": row.rule_id,
                                                                  "error_code": row.last_error_code}))

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
