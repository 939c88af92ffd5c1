"""Dead letters: burying a message that will not go, its optional fallback hook, and the operators'
list and re-drive.

A dead letter stays visible until an admin re-drives it (``bridge dead-letters retry``). An
undeliverable one (Meta 131026 and kin) is queued for the fallback hook
(:mod:`adapter.outbox.fallback_hook`); a configuration error raises an operator alert. A delivered
hook call gave the patient reference to another system: it is audited as a disclosure (IHE BALP
PrivacyDisclosure, ``via: fallback-hook``) in the transaction that marks it done.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, Kind
from adapter.audit.trail import record as audit_record
from adapter.ops.alerts import raise_alert
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import transaction, utcnow


def bury(session: Session, row: OutboxMessage, reason: str, error_class: str | None) -> None:
    """Dead-letters a row; undeliverable ones go to the fallback hook, configuration errors to a person."""
    row.state, row.dead_reason, row.lease_until, row.updated_at = "dead", reason[:200], None, utcnow()
    if error_class == "UndeliverableError":
        row.hook_state = "pending"
    elif error_class == "ConfigurationError":
        raise_alert(session, f"configuration:{row.last_error_code}:{row.rule_id}", "configuration_error",
                    f"message {row.id} ({row.rule_id}) refused by Meta: {reason}")
    session.add(row)


def pending_hooks(engine: Engine, limit: int = 50) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage).where(col(OutboxMessage.hook_state) == "pending")
                                 .order_by(col(OutboxMessage.id)).limit(limit)))


def hook_done(engine: Engine, outbox_id: int, state: str) -> None:
    """Marks a dead letter's fallback hook ``state``; ``done`` means the hook received the patient
    reference, which is a disclosure to another system and is audited as one (same transaction)."""
    with transaction(engine) as session:
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


def dead_letters(engine: Engine, limit: int = 100) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage).where(col(OutboxMessage.state) == "dead")
                                 .order_by(col(OutboxMessage.id)).limit(limit)))


def redrive(engine: Engine, outbox_id: int) -> str:
    """Puts a dead letter back in the queue; says why not when it cannot be."""
    with transaction(engine) as session:
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
