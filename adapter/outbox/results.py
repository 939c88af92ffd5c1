"""Recording what became of each send: its attempt, its row's next state, the recipient's pace, and
its disclosure audit entry, in one transaction per batch.

Every attempt that reached the Cloud API is audited in the transaction that records its result
(:func:`record_outcomes`, :func:`disclosure_entry`): a send is a disclosure of the patient's
information to a third party (IHE BALP PrivacyDisclosure at the source, DICOM 110106 "Export",
action R as in DICOM PS3.15 A.5.3.5 and BALP's example: the record is read out and sent). A
request never made (sending paused) is not a disclosure.

Several instances record outcomes and apply statuses at once: both lock the outbox rows they touch
in id order first (:func:`read_rows_in_order`), so they wait for each other instead of deadlocking.
A batch works in sets: one statement per table, whatever its size (:func:`record_outcomes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome
from adapter.audit.trail import record as audit_record
from adapter.ops.metrics import count_sends
from adapter.outbox.batch_writes import set_paces, update_by_id, write_back
from adapter.outbox.circuit_breaker import pause_sending
from adapter.outbox.dead_letters import bury
from adapter.outbox.tables import OutboxMessage, SendAttempt
from adapter.storage.db import table_of, transaction, utcnow

RECORD_TRIES = 3
RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure
# What an outcome may change on a row (bury and the re-plan included); written back with one UPDATE.
_OUTCOME_COLUMNS = ("state", "wamid", "sent_at", "due_at", "lease_until", "updated_at", "last_error_code",
                    "last_error_class", "dead_reason", "hook_state", "payload", "body_type", "template_name",
                    "template_language", "delivery_status")


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
    detail: dict[str, str | int | None] = {
        "outbox": outbox_id, "attempt": attempt_no, "result": result,
        "type": row.body_type if row is not None else None,  # the body's plain columns: it is sealed
        "template": row.template_name if row is not None and row.body_type == "template" else None,
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


def read_rows_in_order(session: Session, outbox_ids: Iterable[int]) -> dict[int, OutboxMessage]:
    """Reads these outbox rows in one statement, on PostgreSQL locking them in id order, so two
    instances' transactions over overlapping rows wait for each other instead of deadlocking (SQLite
    has one writer)."""
    ids = sorted(set(outbox_ids))
    if not ids:
        return {}
    rows = session.exec(select(OutboxMessage).where(col(OutboxMessage.id).in_(ids))
                        .order_by(col(OutboxMessage.id)).with_for_update())
    return {row.id or 0: row for row in rows}


def record_outcomes(engine: Engine, pair_interval: timedelta, outcomes: list[SendOutcome]) -> None:
    """Applies a batch of send outcomes in one transaction, with one audit entry per attempt made
    (written once for the batch, in the same transaction). Several instances: the rows are locked in id
    order (as :func:`adapter.outbox.statuses.apply_pending` does), and a deadlock victim tries again, because a
    lost outcome would leave a sent message to be claimed and sent again after its lease."""
    if not outcomes:
        return
    for attempt_no in range(1, RECORD_TRIES + 1):
        try:
            _record(engine, pair_interval, sorted(outcomes, key=lambda outcome: outcome.outbox_id))
            return
        except DBAPIError as error:
            if attempt_no == RECORD_TRIES or getattr(error.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise


def _record(engine: Engine, pair_interval: timedelta, outcomes: list[SendOutcome]) -> None:
    """In sets, whatever the batch's size: one read of the rows (locked in id order), one of the attempts,
    the outcomes applied in memory in outbox id order exactly as one by one, then one write per table:
    the attempts, the recipients' paces (the last value per recipient), the rows, the audit entries."""
    now = utcnow()
    with transaction(engine) as session:
        rows = read_rows_in_order(session, [outcome.outbox_id for outcome in outcomes])
        templates = {outbox_id: row.template_name or row.body_type for outbox_id, row in rows.items()}  # metrics
        attempt_nos = {attempt_id or 0: attempt_no for attempt_id, attempt_no in session.exec(
            select(SendAttempt.id, SendAttempt.attempt_no)
            .where(col(SendAttempt.id).in_(sorted({outcome.attempt_id for outcome in outcomes}))))}
        audit: list[AuditEntry] = []
        finished: dict[int, dict[str, Any]] = {}
        paces: dict[bytes, datetime] = {}
        changed: dict[int, OutboxMessage] = {}
        with session.no_autoflush:  # the rows change in memory and are written once, by write_back
            for outcome in outcomes:
                row = rows.get(outcome.outbox_id)
                attempt_no = attempt_nos.get(outcome.attempt_id)
                settled = (row is not None and outcome.wamid is not None and row.wamid == outcome.wamid
                           and row.state != "sending")  # a status got here first and audited the send
                if outcome.attempted and not settled:  # before the row changes: what went, not its re-plan
                    audit.append(disclosure_entry(
                        row, outcome.outbox_id, attempt_no, outcome.result,
                        wamid=outcome.wamid, error_code=outcome.error_code, error_class=outcome.error_class))
                if attempt_no is not None:
                    finished[outcome.attempt_id] = {
                        "id": outcome.attempt_id, "finished_at": now, "outcome": outcome.result,
                        "error_code": outcome.error_code, "error_class": outcome.error_class}
                if outcome.pause_reason:
                    pause_sending(session, outcome.pause_reason)
                if row is not None and row.recipient_key and outcome.answered_at and pair_interval:
                    # Pace from the answer, not from the claim (the rate limiter may have held the
                    # request): Meta counts what reaches it. A refused request reached nobody.
                    reached = outcome.result in ("sent", "ambiguous")
                    paces[row.recipient_key] = outcome.answered_at + pair_interval if reached else now
                if row is not None and _apply(session, row, outcome, attempt_no, now):
                    changed[outcome.outbox_id] = row
            update_by_id(session, table_of(SendAttempt), list(finished.values()))
            set_paces(session, paces)
            write_back(session, list(changed.values()), _OUTCOME_COLUMNS)
        audit_record(session, *audit, at=now)
    count_sends(outcomes, templates)  # committed: the process's send counters (adapter.ops.metrics)


def _apply(session: Session, row: OutboxMessage, outcome: SendOutcome, attempt_no: int | None,
           now: datetime) -> bool:
    """The row's next state after one outcome, in memory; False when the outcome no longer decides it."""
    if row.state != "sending":
        return False  # a status webhook reconciled it meanwhile, or an admin changed it
    if attempt_no is not None and row.attempts != attempt_no and outcome.result != "sent":
        return False  # our lease expired and another instance claimed it again: its attempt decides
    row.updated_at, row.lease_until = now, None
    row.last_error_code, row.last_error_class = outcome.error_code, outcome.error_class
    if outcome.result == "sent":
        row.state, row.wamid, row.sent_at = "sent", outcome.wamid, now
    elif outcome.result == "dead":
        bury(session, row, outcome.dead_reason or "dead", outcome.error_class)
    elif outcome.result == "replan":
        replan_as_template(session, row)
    else:
        row.state, row.due_at = "queued", outcome.retry_at or now
    return True


def replan_as_template(session: Session, row: OutboxMessage) -> None:
    """Meta said the 24-hour window is closed (131047): send the fallback template instead, now."""
    if row.fallback is None or row.payload == row.fallback:
        bury(session, row, "24-hour window closed and no template to fall back on", None)
        return
    # The fallback shares the body's context (adapter.outbox.encoding): it moves sealed, without the key.
    # It is a template; which one, the next claim reads when it checks its review status.
    row.payload, row.state, row.due_at, row.wamid, row.lease_until = row.fallback, "queued", utcnow(), None, None
    row.body_type, row.template_name, row.template_language = "template", None, None
    row.delivery_status = None
    session.add(row)
