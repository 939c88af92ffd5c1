"""Operator alerts: things a person must act on (a configuration error Meta reported, a paused
template, sending paused by an account-level error). Raised once per key until acknowledged; listed
by ``bridge alerts list`` and counted in ``/health``. They carry ids and codes, never PHI."""

from __future__ import annotations

import logging

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.ops.tables import OperatorAlert
from adapter.storage.db import insert_ignoring_duplicates, transaction, utcnow

log = logging.getLogger(__name__)


def raise_alert(session: Session, key: str, kind: str, detail: str) -> bool:
    """Records an alert unless one with ``key`` is open; returns whether it is new."""
    open_one = session.exec(select(OperatorAlert).where(col(OperatorAlert.dedupe_key) == key[:200])).first()
    if open_one is not None:
        if open_one.acknowledged_at is None:
            return False
        session.delete(open_one)  # acknowledged before and happening again: raise it anew
        session.flush()
    new = insert_ignoring_duplicates(session, OperatorAlert, [{
        "dedupe_key": key[:200], "kind": kind, "detail": detail[:300], "created_at": utcnow(),
        "acknowledged_at": None}], "dedupe_key") == 1
    if new:
        log.warning("operator alert %s: %s", kind, detail[:300])
    return new


def open_alerts(engine: Engine, limit: int = 200) -> list[OperatorAlert]:
    with Session(engine) as session:
        return list(session.exec(select(OperatorAlert).where(col(OperatorAlert.acknowledged_at).is_(None))
                                 .order_by(col(OperatorAlert.id)).limit(limit)))


def count_open(session: Session) -> dict[str, int]:
    rows = session.exec(select(OperatorAlert.kind, func.count()).where(col(OperatorAlert.acknowledged_at).is_(None))
                        .group_by(col(OperatorAlert.kind))).all()
    return {kind: int(count) for kind, count in rows}


def acknowledge(engine: Engine, alert_id: int | None = None) -> int:
    """Acknowledges one alert, or all open ones when ``alert_id`` is None; returns how many."""
    with transaction(engine) as session:
        query = select(OperatorAlert).where(col(OperatorAlert.acknowledged_at).is_(None))
        if alert_id is not None:
            query = query.where(col(OperatorAlert.id) == alert_id)
        rows = list(session.exec(query))
        for row in rows:
            row.acknowledged_at = utcnow()
            session.add(row)
        return len(rows)
