"""The send path's writes as sets: one statement per table per batch, whatever the batch's size.

The claim (:mod:`adapter.outbox.claims`) and the recording of send outcomes (:mod:`adapter.outbox.results`)
decide on a batch's rows in memory, then write them here (DESIGN.md, invariants: "work in sets on the hot
path", measured by ``bench/work_per_event.py``):

- :func:`take_paces`: the conditional take of every recipient's pace slot, one multi-row
  ``INSERT … ON CONFLICT DO UPDATE … WHERE next_send_at <= now RETURNING``;
- :func:`set_paces`: the paces learnt from the senders' answers, one multi-row upsert;
- :func:`insert_attempts`: the batch's send attempts, one multi-row ``INSERT … RETURNING``;
- :func:`update_by_id` and :func:`write_back`: changed rows, one ``executemany`` UPDATE by primary key.

Pace keys go in sorted order: PostgreSQL locks the conflicting rows of one statement in ``VALUES`` order, so
instances writing overlapping recipients take those locks in one order and wait for each other instead of
deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlmodel import Session

from adapter.outbox.tables import OutboxMessage, RecipientPace, SendAttempt
from adapter.storage.db import table_of

_outbox = table_of(OutboxMessage)
_pace = table_of(RecipientPace)
_attempt = table_of(SendAttempt)


def _upsert(session: Session, table: Table) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT``."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def take_paces(session: Session, keys: Iterable[bytes], until: datetime, now: datetime) -> set[bytes]:
    """Takes the pace slot of each recipient whose slot is free (no row, or ``next_send_at <= now``),
    moving it to ``until``, in one statement; returns the keys taken.

    Insert, or update only where the slot is free: two instances claiming messages to one recipient at
    once cannot both pass the pair-interval check, as a read-then-write could. On PostgreSQL the loser
    waits for the winner's commit, re-checks the condition against the committed row, and gets no row
    back for that key."""
    ordered = sorted(set(keys))
    if not ordered:
        return set()
    statement = _upsert(session, _pace).values([{"recipient_key": key, "next_send_at": until} for key in ordered])
    statement = statement.on_conflict_do_update(
        index_elements=["recipient_key"], set_={"next_send_at": statement.excluded.next_send_at},
        where=_pace.c.next_send_at <= now)
    return {bytes(key) for key in session.execute(statement.returning(_pace.c.recipient_key)).scalars()}


def set_paces(session: Session, paces: Mapping[bytes, datetime]) -> None:
    """Sets each recipient's next send time, inserting or overwriting, in one statement."""
    if not paces:
        return
    statement = _upsert(session, _pace).values(
        [{"recipient_key": key, "next_send_at": paces[key]} for key in sorted(paces)])
    session.execute(statement.on_conflict_do_update(
        index_elements=["recipient_key"], set_={"next_send_at": statement.excluded.next_send_at}))


def insert_attempts(session: Session, attempts: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Inserts send attempts (``outbox_id``, ``attempt_no``, ``started_at``), at most one per outbox
    row, in one statement; returns each attempt's id by its outbox row's id.

    The ids are matched by the ``outbox_id`` each returned row carries, not by the order rows come back
    in, so neither database has to promise an order (which SQLAlchemy could only get on SQLite by
    sending one INSERT per row)."""
    if not attempts:
        return {}
    if len({attempt["outbox_id"] for attempt in attempts}) != len(attempts):
        raise ValueError("one attempt per outbox row and batch")
    rows = session.execute(insert(_attempt).returning(_attempt.c.outbox_id, _attempt.c.id),
                           [dict(attempt) for attempt in attempts]).all()
    return {outbox_id: attempt_id for outbox_id, attempt_id in rows}


def update_by_id(session: Session, table: Table, changes: Sequence[Mapping[str, Any]]) -> None:
    """Updates rows by ``id`` with one ``executemany`` UPDATE; every change names the same columns."""
    if not changes:
        return
    columns = [name for name in changes[0] if name != "id"]
    # Bound names differ from the column names: SQLAlchemy reserves those for its own SET parameters.
    statement = (update(table).where(table.c.id == bindparam("b_id"))
                 .values({name: bindparam(f"b_{name}") for name in columns}))
    session.execute(statement, [{f"b_{name}": change[name] for name in ("id", *columns)} for change in changes])


def write_back(session: Session, rows: Sequence[OutboxMessage], columns: Sequence[str]) -> None:
    """Writes ``columns`` of these outbox rows, as changed in memory, with one UPDATE; the rows leave the
    session first, so it never flushes them one by one. Callers hold the rows' locks (read ``FOR
    UPDATE`` on PostgreSQL, the one writer on SQLite): an unchanged column is written back as it was."""
    if not rows:
        return
    changes = [{"id": row.id, **{name: getattr(row, name) for name in columns}} for row in rows]
    for row in rows:
        if row in session:
            session.expunge(row)
    update_by_id(session, _outbox, changes)
