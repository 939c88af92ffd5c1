"""Legal holds: keep audit records from retention purges while litigation or an investigation needs them.

A hold names one patient (``patient_ref``) or, with ``None``, the whole trail. A purge never deletes
a record at or after the earliest record a hold covers (:mod:`adapter.audit.purge`). Placing and
releasing holds are themselves audited (45 CFR 164.316(b)(2)(i) keeps documentation six years).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import LegalHold
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.storage.db import transaction, utcnow


class HoldNotFoundError(LookupError):
    """No active legal hold has that id."""


@dataclass(frozen=True)
class Hold:
    id: int
    patient_ref: str | None
    reason: str
    created_by: str
    created_at: datetime


def place_hold(engine: Engine, patient_ref: str | None, reason: str, actor: str) -> int:
    """Places a hold (``patient_ref=None`` holds everything); returns its id."""
    with transaction(engine) as session:
        hold = LegalHold(patient_ref=patient_ref, reason=reason[:300], created_by=actor[:200], created_at=utcnow())
        session.add(hold)
        session.flush()
        assert hold.id is not None
        record(session, AuditEntry(kind=Kind.ADMIN, action=Action.CREATE, agent=actor, patient_ref=patient_ref,
                                   entity_ref=f"legal-hold/{hold.id}", purpose=reason[:300],
                                   detail={"op": "legal-hold-place", "scope": "patient" if patient_ref else "all"}))
        return hold.id


def release_hold(engine: Engine, hold_id: int, actor: str) -> Hold:
    """Releases an active hold; the row stays (with ``released_at``) as the record that it existed."""
    with transaction(engine) as session:
        hold = session.get(LegalHold, hold_id)
        if hold is None or hold.released_at is not None:
            raise HoldNotFoundError(f"no active legal hold {hold_id}")
        hold.released_at = utcnow()
        session.add(hold)
        record(session, AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=actor, patient_ref=hold.patient_ref,
                                   entity_ref=f"legal-hold/{hold_id}", detail={"op": "legal-hold-release"}))
        return _hold(hold)


def active_holds(engine: Engine) -> list[Hold]:
    with transaction(engine) as session:
        return active_holds_in(session)


def active_holds_in(session: Session) -> list[Hold]:
    rows = session.exec(select(LegalHold).where(col(LegalHold.released_at).is_(None)).order_by(col(LegalHold.id)))
    return [_hold(row) for row in rows]


def _hold(row: LegalHold) -> Hold:
    assert row.id is not None
    return Hold(row.id, row.patient_ref, row.reason, row.created_by, row.created_at)
