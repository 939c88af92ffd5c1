"""The machinery of retention purges (:mod:`adapter.maintenance.retention` says what goes when): one
category of rows at a time, in audited batches, legal holds respected.

Each batch (at most ``batch_size`` rows) is one transaction that picks the rows (locked, skipping rows
another instance holds), deletes or clears them with the category's condition re-checked (a row that
changed meanwhile is left alone), and records ONE audit entry (``Kind.RETENTION``, ``Action.DELETE``)
with the rows it removed: an entry commits or rolls back with exactly the rows it describes, and a
crash between batches leaves no unaudited deletion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, exists, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.tables import LegalHold
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.storage.db import table_of, transaction

_hold = table_of(LegalHold)


@dataclass(frozen=True)
class Cutoffs:
    """The instants of one run: data of a category older than its instant may go."""

    links: datetime
    messages: datetime
    opt_out: datetime
    hl7_raw: datetime  # a stale or dead HL7 message's text
    hl7_open: datetime  # an HL7-fed appointment that was never ended by its feed


@dataclass(frozen=True)
class Category:
    """One purge: the rows of ``table`` matching ``where`` are deleted, or have ``clear`` set to
    ``cleared`` (NULL, or ``""`` for a NOT NULL column). ``key`` names the rows in a batch."""

    name: str
    table: Table
    where: Callable[[Cutoffs], ColumnElement[bool]]
    older_than: Callable[[Cutoffs], datetime]
    clear: tuple[str, ...] = ()
    cleared: str | None = None
    key: str = "id"


def held(patient_ref: Any) -> ColumnElement[bool]:
    """An active legal hold covers this patient (or everyone)."""
    return exists().where(_hold.c.released_at.is_(None),
                          or_(_hold.c.patient_ref.is_(None), _hold.c.patient_ref == patient_ref))


def any_hold() -> ColumnElement[bool]:
    """A hold without a patient is active: it keeps rows that name no patient."""
    return exists().where(_hold.c.released_at.is_(None), _hold.c.patient_ref.is_(None))


def basic_iso(at: datetime) -> str:
    """ISO 8601 basic format (``20261125T000000Z``): the audit detail check reads the extended
    format's digit-and-dash runs (``2026-11-25``) as a phone number."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def count(engine: Engine, category: Category, cut: Cutoffs) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(category.table)
                                   .where(category.where(cut))).scalar_one())


def purge(engine: Engine, category: Category, cut: Cutoffs, batch_size: int, actor: str, run_id: str) -> int:
    total = 0
    while True:
        with transaction(engine) as session:
            selected, removed = _purge_batch(session, category, cut, batch_size)
            if removed:
                record(session, AuditEntry(kind=Kind.RETENTION, action=Action.DELETE, agent=actor, detail={
                    "category": category.name, "rows": removed,
                    "older_than": basic_iso(category.older_than(cut)), "run": run_id}))
        total += removed
        if selected < batch_size:  # a short batch: nothing older is left (rows locked elsewhere wait a run)
            return total


def _purge_batch(session: Session, category: Category, cut: Cutoffs, batch_size: int) -> tuple[int, int]:
    """One batch: pick up to ``batch_size`` keys, then delete or clear those rows with the condition
    re-checked. Returns (rows picked, rows removed)."""
    table, condition = category.table, category.where(cut)
    key = table.c[category.key]
    ids = list(session.execute(select(key).where(condition).order_by(key).limit(batch_size)
                               .with_for_update(skip_locked=True)).scalars())
    if not ids:
        return 0, 0
    statement: Any
    if category.clear:
        statement = update(table).where(key.in_(ids), condition).values(
            {name: category.cleared for name in category.clear})
    else:
        statement = delete(table).where(key.in_(ids), condition)
    return len(ids), int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]  # CursorResult
