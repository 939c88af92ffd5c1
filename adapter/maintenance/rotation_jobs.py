"""How the key-rotation jobs rewrite rows while the service keeps serving: pages of rows read
without locks, each write in its own short transaction retried after a lock conflict, every write a
compare-and-set (``UPDATE ... WHERE id = ? AND col = <value read>``) so a concurrent writer wins and the
row is looked at again in the next pass, passes repeated until no row uses an old key, and one
``key-rotation`` audit entry per run (ids and counts, never key material or values). A job is thereby
resumable and idempotent: a second run finds nothing to do.

Running instances on a keyring file switch to a newly active key within about a second
(:data:`adapter.security.keys.RECHECK_SECONDS`); ``bridge keys rotate`` waits that long before the job starts.

On SQLite (one instance, writers serialised in-process by :func:`adapter.storage.db.transaction`) run the jobs
from the service's process or with the service stopped: a second writer process makes the service's
read-then-write steps fail with "database is locked".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Column, Executable, func
from sqlalchemy.engine import CursorResult, Engine, Row
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.security.crypto import TAG_BYTES
from adapter.storage.db import transaction

T = TypeVar("T")
# Rows looked at so far and the expected total (None: unknown); the CLI draws it, the jobs stay free of it.
Progress = Callable[[int, int | None], None]
MAX_PASSES = 1000  # a writer still using an old key keeps rows coming back; give up rather than spin forever
RETRIES = 6


def run_batch(engine: Engine, work: Callable[[Session], T]) -> T:
    """Runs ``work`` in its own short transaction, again after a lock conflict with the running service
    (SQLite "database is locked", a PostgreSQL deadlock): every write here is idempotent."""
    for attempt in range(RETRIES):
        try:
            with transaction(engine) as session:
                return work(session)
        except OperationalError:
            if attempt == RETRIES - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def read_page(engine: Engine, statement: Executable) -> list[Row[Any]]:
    """A page of rows to look at, read without locks (the writes re-check each row)."""
    with Session(engine) as session:
        return list(session.execute(statement).all())


def changed_rows(session: Session, statement: Executable) -> int:
    """Rows an UPDATE or DELETE changed (0 when a compare-and-set lost its race)."""
    result = session.execute(statement)
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def compare_and_set(session: Session, *, statement: Executable) -> int:
    return changed_rows(session, statement)


def audit_run(engine: Engine, job: str, key_id: str, rows: int, agent: str, outcome: Outcome) -> None:
    with transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.KEY_ROTATION, action=Action.UPDATE, outcome=outcome, agent=agent,
                                   detail={"job": job, "key_id": key_id, "rows": rows}))


def old_tag(column: Column[Any], tag: bytes) -> Any:
    return column.is_not(None) & (func.substr(column, 1, TAG_BYTES) != tag)


def until_done(step: Callable[[], tuple[int, int]], what: str) -> int:
    """Repeats ``step`` (returns rows seen, rows changed) until a page finds nothing left to do."""
    done = 0
    for _ in range(MAX_PASSES):
        seen, changed = step()
        done += changed
        if not seen:
            return done
        if not changed:
            time.sleep(0.05)  # every row lost its race: let the writer finish
    raise RuntimeError(f"{what}: rows under an old key keep coming back; is every instance using the new keys?")


def counted(step: Callable[[], tuple[int, int]], progress: Progress | None, total: int | None,
            done: list[int]) -> Callable[[], tuple[int, int]]:
    """``step`` that also adds its rows seen to ``done[0]`` and reports them; the total grows to the count
    when rows come back (a lost race), so a bar never runs past its end."""
    def run() -> tuple[int, int]:
        seen, changed = step()
        done[0] += seen
        if progress is not None:
            progress(done[0], None if total is None else max(total, done[0]))
        return seen, changed
    return run
