"""The chaining step: gives each audit event a gapless sequence number and links it to the one before.

Database sequences have gaps (rolled-back inserts) and ids do not follow commit order, so
``audit_event.id`` cannot be the chain order. One chainer at a time reads the queue
(``audit_pending``) in id order and appends to ``audit_chain``::

    hash(seq) = SHA-256(prev_hash || canonical_bytes(event, seq)),  prev_hash(1) = 32 zero bytes

**Canonical record bytes** (version 1, what an auditor re-implements): a JSON object with every
``audit_event`` column (``id``, ``recorded_at``, ``kind``, ``action``, ``outcome``, ``agent``,
``agent_role``, ``source``, ``patient_ref``, ``entity_ref``, ``purpose``, ``detail``) and ``seq``;
keys sorted, no whitespace (separators ``,`` and ``:``), non-ASCII kept as UTF-8, NULL as ``null``;
``recorded_at`` as UTC ISO 8601 with microseconds and ``+00:00`` (``2026-01-02T03:04:05.000006+00:00``),
so SQLite and PostgreSQL give the same bytes.

After a retention purge (:mod:`adapter.audit.purge`) the head is the highest remaining record, or,
when every record was purged, the boundary checkpoint's head and seq.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.tables import AuditChain, AuditCheckpoint, AuditEvent, AuditPending, AuditPurge
from adapter.storage.db import table_of, transaction, utcnow

GENESIS = bytes(32)
# pg_advisory_xact_lock key shared by the chainer, the checkpointer and the purge ("AUDITCHN").
CHAIN_LOCK_KEY = 0x41554449_5443484E
EVENT_COLUMNS = ("id", "recorded_at", "kind", "action", "outcome", "agent", "agent_role", "source",
                 "patient_ref", "entity_ref", "purpose", "detail")


def canonical_time(value: datetime) -> str:
    """UTC ISO 8601 with microseconds; a naive value is taken as UTC (SQLite stores no offset)."""
    aware = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_bytes(event: Mapping[str, Any], seq: int) -> bytes:
    """The bytes a record's hash covers (see the module docstring for the format)."""
    document: dict[str, Any] = {column: event[column] for column in EVENT_COLUMNS}
    document["recorded_at"] = canonical_time(event["recorded_at"])
    document["seq"] = seq
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(prev_hash: bytes, event: Mapping[str, Any], seq: int) -> bytes:
    return hashlib.sha256(prev_hash + canonical_bytes(event, seq)).digest()


def lock_chain(session: Session) -> None:
    """Serialises chainers, checkpointers and purges across instances (PostgreSQL); on SQLite the
    process's writer lock taken by :func:`adapter.storage.db.transaction` does it (one instance)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})


def chain_head(session: Session | Connection) -> tuple[int, bytes]:
    """(seq, hash) of the last chained record; ``(0, GENESIS)`` for an empty trail."""
    chain = table_of(AuditChain)
    row = session.execute(select(chain.c.seq, chain.c.hash).order_by(chain.c.seq.desc()).limit(1)).first()
    if row is not None:
        return int(row[0]), bytes(row[1])
    boundary = session.execute(select(func.max(table_of(AuditPurge).c.boundary_seq))).scalar()
    if boundary is not None:
        checkpoints = table_of(AuditCheckpoint)
        head = session.execute(select(checkpoints.c.head).where(checkpoints.c.seq == boundary)).scalar()
        if head is not None:
            return int(boundary), bytes(head)
    return 0, GENESIS


def chain_pending(engine: Engine, *, limit: int = 1000) -> int:
    """Chains up to ``limit`` queued events in one transaction; returns how many it chained."""
    events, pending, chain = table_of(AuditEvent), table_of(AuditPending), table_of(AuditChain)
    with transaction(engine) as session:
        lock_chain(session)
        rows = session.execute(
            select(*(events.c[column] for column in EVENT_COLUMNS))
            .join(pending, pending.c.event_id == events.c.id)
            .order_by(events.c.id).limit(limit)).mappings().all()
        if not rows:
            return 0
        seq, prev = chain_head(session)
        now = utcnow()
        links = []
        for row in rows:
            seq += 1
            digest = record_hash(prev, dict(row), seq)
            links.append({"seq": seq, "event_id": row["id"], "prev_hash": prev, "hash": digest, "chained_at": now})
            prev = digest
        session.execute(insert(chain), links)
        session.execute(pending.delete().where(pending.c.event_id.in_([row["id"] for row in rows])))
        return len(rows)


def has_pending(engine: Engine) -> bool:
    """A cheap read (no lock, no write transaction): is anything waiting to be chained?"""
    pending = table_of(AuditPending)
    with engine.connect() as connection:
        return connection.execute(select(pending.c.event_id).limit(1)).first() is not None
