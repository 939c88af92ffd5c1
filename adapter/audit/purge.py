"""Retention purge of the audit trail, keeping it verifiable from a boundary checkpoint.

HIPAA keeps audit documentation six years (45 CFR 164.316(b)(2)(i)); after that, records are
deleted in whole checkpoint ranges so the trail stays verifiable: the **boundary** is the latest
checkpoint whose records were all recorded before ``older_than`` and that lies before the earliest
record an active legal hold covers (:mod:`adapter.audit.holds`). An ``audit_purge`` permit row
(``up_to_seq = boundary_seq = boundary.seq``) is what lets the delete triggers of migration 0007
remove events and chain records up to it and checkpoints before it; the boundary checkpoint stays,
and ``verify`` continues from its signed head.

Deletes run in batches of ``batch_size`` rows, each its own transaction, so a purge of millions
of rows neither holds long locks nor loses its progress: a second run resumes under the same
permit, and with nothing left deletes nothing. Each run is audited (``Kind.RETENTION``).

On PostgreSQL the application's role has no DELETE on the audit tables (:mod:`adapter.audit.grants`):
pass an engine connected with the maintenance (owner) database URL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.chain import lock_chain
from adapter.audit.holds import active_holds_in
from adapter.audit.tables import AuditChain, AuditCheckpoint, AuditEvent, AuditPurge
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.storage.db import table_of, transaction, utcnow


@dataclass(frozen=True)
class AuditPurgeReport:
    """What a run did. ``boundary_seq`` is the checkpoint verification now starts from (None: no
    checkpoint qualifies yet, nothing was deleted)."""

    boundary_seq: int | None
    permit_created: bool
    events_deleted: int
    records_deleted: int
    checkpoints_deleted: int


def audit_cutoff(years: int, now: datetime | None = None) -> datetime:
    """The instant before which audit records may go: ``years`` of 365.25 days, rounded up, so leap
    years never shorten the period below what the law asks (HIPAA 45 CFR 164.316(b)(2): six years)."""
    return (now or utcnow()) - timedelta(days=math.ceil(365.25 * years))


def purge_audit(engine: Engine, *, older_than: datetime, batch_size: int, actor: str) -> AuditPurgeReport:
    """Deletes audit records older than ``older_than`` up to the boundary checkpoint (module docstring)."""
    purges = table_of(AuditPurge)
    with transaction(engine) as session:
        lock_chain(session)
        boundary = _boundary(session, older_than)
        permitted = session.execute(select(func.max(purges.c.up_to_seq))).scalar()
        permit_created = boundary is not None and (permitted is None or boundary > int(permitted))
        if permit_created:
            session.execute(insert(purges).values(up_to_seq=boundary, boundary_seq=boundary, at=utcnow(),
                                                  reason=f"retention: recorded before {older_than.date().isoformat()}"))
            permitted = boundary
    up_to = int(permitted) if permitted is not None else None
    events = records = checkpoints = 0
    if up_to is not None:
        events, records = _delete_records(engine, up_to, batch_size)
        checkpoints = _delete_checkpoints(engine, up_to, batch_size)
    report = AuditPurgeReport(up_to, permit_created, events, records, checkpoints)
    with transaction(engine) as session:
        record(session, AuditEntry(
            kind=Kind.RETENTION, action=Action.DELETE, agent=actor, entity_ref="audit-trail",
            purpose="retention", detail={"older_than": older_than.date().isoformat(), "boundary_seq": up_to,
                                         "events": events,
                    "records": records, "checkpoints": checkpoints, "new_permit": permit_created}))
    return report


def _boundary(session: Session, older_than: datetime) -> int | None:
    """The seq of the latest checkpoint wholly before ``older_than`` and before every held record."""
    chain, events, checkpoints = table_of(AuditChain), table_of(AuditEvent), table_of(AuditCheckpoint)
    joined = chain.join(events, events.c.id == chain.c.event_id)
    # Records are not in recorded_at order (ids commit out of order): the first young one bounds it.
    limit = session.execute(select(func.min(chain.c.seq)).select_from(joined)
                            .where(events.c.recorded_at >= older_than)).scalar()
    holds = active_holds_in(session)
    if any(hold.patient_ref is None for hold in holds):
        return None
    refs = [hold.patient_ref for hold in holds if hold.patient_ref is not None]
    if refs:
        held = session.execute(select(func.min(chain.c.seq)).select_from(joined)
                               .where(events.c.patient_ref.in_(refs))).scalar()
        if held is not None:
            limit = held if limit is None else min(int(limit), int(held))
    query = select(func.max(checkpoints.c.seq))
    if limit is not None:
        query = query.where(checkpoints.c.seq < limit)
    boundary = session.execute(query).scalar()
    return int(boundary) if boundary is not None else None


def _delete_records(engine: Engine, up_to: int, batch_size: int) -> tuple[int, int]:
    """Deletes events, then their chain records (the event trigger checks the chain record), in batches."""
    chain, events = table_of(AuditChain), table_of(AuditEvent)
    deleted_events = deleted_records = 0
    while True:
        with transaction(engine) as session:
            rows = session.execute(select(chain.c.seq, chain.c.event_id).where(chain.c.seq <= up_to)
                                   .order_by(chain.c.seq).limit(batch_size)).all()
            if not rows:
                return deleted_events, deleted_records
            ids = [row[1] for row in rows]
            deleted_events += session.connection().execute(events.delete().where(events.c.id.in_(ids))).rowcount
            deleted_records += session.connection().execute(
                chain.delete().where(chain.c.seq.in_([row[0] for row in rows]))).rowcount


def _delete_checkpoints(engine: Engine, boundary: int, batch_size: int) -> int:
    checkpoints = table_of(AuditCheckpoint)
    deleted = 0
    while True:
        with transaction(engine) as session:
            seqs = session.execute(select(checkpoints.c.seq).where(checkpoints.c.seq < boundary)
                                   .order_by(checkpoints.c.seq).limit(batch_size)).scalars().all()
            if not seqs:
                return deleted
            deleted += session.connection().execute(checkpoints.delete().where(checkpoints.c.seq.in_(seqs))).rowcount
