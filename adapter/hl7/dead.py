"""Dead HL7 v2 messages: stored and acknowledged, but not processable (the field positions changed
since, the data key is gone, or deciding failed on every attempt). Nothing is dropped silently
(DESIGN.md, "Nothing is dropped silently"): each goes ``dead`` with its error class and an operator
alert (``hl7_dead``, one per message) that names it by id, facility, type and MSH-10 — identifiers,
never the message's content. ``bridge hl7 dead list`` shows them; ``bridge hl7 dead retry ID`` queues
one again (audited) once the cause is fixed, which closes its alert. A message whose raw text
retention already removed (``retention_hl7_raw_days``) cannot be retried: the sender must send it
again under a new MSH-10, since the old one is still known and a copy would be a duplicate.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.feeds.hl7_tables import Hl7Message
from adapter.ops.alerts import raise_alert
from adapter.ops.tables import OperatorAlert
from adapter.storage.db import table_of, transaction, utcnow

ALERT_KIND = "hl7_dead"


def alert_key(message_id: int) -> str:
    return f"{ALERT_KIND}:{message_id}"


def bury(session: Session, dead: list[tuple[int, str]]) -> None:
    """Marks each (message id, error class) dead and raises its operator alert, in ``session``'s transaction."""
    table = table_of(Hl7Message)
    now = utcnow()
    for message_id, error in dead:
        session.execute(update(table).where(table.c.id == message_id)
                        .values(state="dead", last_error=error[:200], processed_at=now, lease_until=None))
    if not dead:
        return
    rows = session.execute(select(table.c.id, table.c.facility, table.c.message_type, table.c.trigger,
                                  table.c.control_id).where(table.c.id.in_([i for i, _ in dead]))).all()
    errors = dict(dead)
    for row in rows:
        raise_alert(session, alert_key(row.id), ALERT_KIND,
                    # The command first: the detail is cut at 300 characters and a facility name can be long.
                    f"HL7 message {row.id} could not be processed ({errors[row.id][:60]}); fix the cause, then "
                    f"`bridge hl7 dead retry {row.id}`. {row.message_type}^{row.trigger} from {row.facility}, "
                    f"MSH-10 {row.control_id}")


def dead_messages(engine: Engine, limit: int = 100) -> list[Hl7Message]:
    """Dead messages, oldest first."""
    with Session(engine) as session:
        return list(session.execute(select(Hl7Message).where(col(Hl7Message.state) == "dead")
                                    .order_by(col(Hl7Message.id)).limit(limit)).scalars())


def redrive(engine: Engine, message_id: int, *, agent: str = "system") -> str:
    """Queues a dead message again (audited, its alert acknowledged); says why not when it cannot be."""
    with transaction(engine) as session:
        row = session.get(Hl7Message, message_id)
        if row is None:
            return f"no HL7 message {message_id}"
        if row.state != "dead":
            return f"HL7 message {message_id} is {row.state}, not dead"
        if not row.raw_enc:
            return (f"HL7 message {message_id} can no longer be retried: retention removed its text; ask "
                    f"{row.facility} to send it again under a new MSH-10")
        now = utcnow()
        row.state, row.attempts, row.next_attempt_at, row.lease_until = "pending", 0, now, None
        row.last_error, row.processed_at = None, None
        session.add(row)
        session.execute(update(table_of(OperatorAlert))
                        .where(table_of(OperatorAlert).c.dedupe_key == alert_key(message_id),
                               table_of(OperatorAlert).c.acknowledged_at.is_(None))
                        .values(acknowledged_at=now))
        record(session, AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=agent,
                                   entity_ref=f"hl7_message/{message_id}", detail={"command": "hl7.dead.retry"}))
        return f"HL7 message {message_id} queued again"
