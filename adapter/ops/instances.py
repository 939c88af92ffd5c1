"""Several service instances on one database: who leads the periodic jobs, and SQLite's one-instance rule.

DESIGN.md ("the database is the clock"): any number of instances share one
PostgreSQL database. Work rows (inbox, outbox, statuses, inbound messages, action requests) are claimed
with ``FOR UPDATE SKIP LOCKED`` and leases that expire when an instance dies; those claims need no
leader. Periodic jobs that must run *once per tick across instances* (audit chaining and checkpoints,
the daily retention purge, the fallback hook, subscription management, polling reconcile) run only on
the **leader**: the instance holding a PostgreSQL session-level advisory lock
(``pg_try_advisory_lock``, https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS)
on a dedicated connection. The lock belongs to that connection's server session, so when the leader
crashes (SIGKILL, power loss) PostgreSQL ends the session and releases the lock; the next instance to
ask on its own tick becomes leader. APScheduler or the pipeline's loop only ticks: the lock, not the
scheduler, decides who runs a job.

SQLite allows one writer process, so it runs one instance: :func:`hold_instance` takes an exclusive
``flock`` on a lock file next to the database file, and a second process on the same file refuses to
start with :class:`SingleInstanceError`, saying which process holds it and how to run several.

Errors::

    InstanceError
     └── SingleInstanceError   another process already serves this SQLite database
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine import make_url as parse_url
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

# One 64-bit key for "the leader of the periodic jobs" (any constant; distinct from the audit chain's lock).
LEADER_LOCK_KEY = 0x62726467_6C656164  # "brdglead"
LOCK_SUFFIX = ".instance-lock"
DEFAULT_RECHECK_SECONDS = 1.0


class InstanceError(Exception):
    """Base class of this module's errors."""


class SingleInstanceError(InstanceError):
    """A second process asked to serve a SQLite database that one process already serves."""


def instance_id() -> str:
    """This process's name in logs and health: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- SQLite: one instance


@dataclass
class _Held:
    path: Path
    fd: int
    users: int


_HELD: dict[Path, _Held] = {}
_HELD_GUARD = threading.Lock()


def sqlite_lock_path(database_url: str) -> Path | None:
    """The lock file of a SQLite database file (None for PostgreSQL or an in-memory SQLite)."""
    url = parse_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve().with_name(Path(url.database).name + LOCK_SUFFIX)


@dataclass
class InstanceGuard:
    """What :func:`hold_instance` returns; :meth:`release` at shutdown (the OS releases it on a crash)."""

    path: Path | None

    def release(self) -> None:
        if self.path is None:
            return
        with _HELD_GUARD:
            held = _HELD.get(self.path)
            if held is None:
                return
            held.users -= 1
            if held.users <= 0:
                del _HELD[self.path]
                os.close(held.fd)  # closing the descriptor drops the flock
        self.path = None


def hold_instance(database_url: str) -> InstanceGuard:
    """Claims the right to serve ``database_url``. PostgreSQL: always granted (instances coordinate through
    row locks and the leader lock). A SQLite file: an exclusive, non-blocking ``flock`` on
    ``<database>.instance-lock``, held for the process's life; raises :class:`SingleInstanceError` if another
    process holds it. Apps created twice in one process (tests, the demo) share the claim."""
    path = sqlite_lock_path(database_url)
    if path is None:
        return InstanceGuard(None)
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None:
            held.users += 1
            return InstanceGuard(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            raise SingleInstanceError(
                f"another bridge instance ({holder}) already serves the SQLite database {path.with_suffix('')}. "
                "SQLite runs one instance; to run several, point every instance at one PostgreSQL database "
                "(BRIDGE_DATABASE_URL=postgresql+psycopg://...)") from error
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        _HELD[path] = _Held(path, fd, 1)
    return InstanceGuard(path)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode(errors="replace").strip() or "unknown process"
    except OSError:
        return "unknown process"


# --------------------------------------------------------------------------- PostgreSQL: the leader


class Leadership:
    """Whether this instance runs the periodic jobs now. On SQLite (one instance) it always does. On
    PostgreSQL it does while it holds :data:`LEADER_LOCK_KEY` on its own session connection; every
    :meth:`is_leader` call past ``recheck_seconds`` either tries to take the lock or checks that the
    connection (and so the lock) is still alive. A lost connection means lost leadership: another
    instance may lead from its next tick, so a job may at worst run twice across a hand-over, never
    concurrently for longer than one recheck interval. Thread-safe; call it from a worker thread."""

    def __init__(self, engine: Engine, *, key: int = LEADER_LOCK_KEY,
                 recheck_seconds: float = DEFAULT_RECHECK_SECONDS, name: str | None = None) -> None:
        self.engine = engine
        self.key = key
        self.recheck_seconds = recheck_seconds
        self.name = name or instance_id()
        self._single = engine.dialect.name != "postgresql"
        self._connection: Connection | None = None
        self._leader = self._single
        self._checked_at = -recheck_seconds
        self._lock = threading.Lock()

    def is_leader(self) -> bool:
        if self._single:
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at < self.recheck_seconds:
                return self._leader
            self._checked_at = now
            was = self._leader
            try:
                self._leader = self._ask()
            except SQLAlchemyError as error:
                log.warning("leader lock check failed (%s): not leading until it works again", type(error).__name__)
                self._drop()
            if self._leader != was:
                log.info("instance %s %s the periodic jobs", self.name,
                         "now leads" if self._leader else "stopped leading")
            return self._leader

    def _ask(self) -> bool:
        if self._connection is None:
            # Outside the pool's recycling and in autocommit: the session, not a transaction, holds the lock.
            self._connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if self._leader:
            self._connection.execute(text("SELECT 1"))  # the session is alive, so the lock is still ours
            return True
        return bool(self._connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())

    def _drop(self) -> None:
        self._leader = False
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.invalidate()  # never back to the pool: its session may hold the lock
                self._connection.close()
            self._connection = None

    def release(self) -> None:
        """Steps down at shutdown, so another instance leads from its next tick rather than after a timeout."""
        if self._single:
            return
        with self._lock:
            if self._connection is not None and self._leader:
                with contextlib.suppress(SQLAlchemyError):
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._drop()
            self._checked_at = -self.recheck_seconds
