"""Instance liveness: a heartbeat per boot, and the release of the leases a dead instance held.

DESIGN.md ("the database is the clock"): work rows are claimed with ``SKIP LOCKED`` and a lease. A
lease alone makes a crashed instance's work wait for the lease's end (minutes). So each running
instance has an identity — a stable **name** (settings: ``instance_name``; by default the host name and
the HTTP port) and a **boot id**, new at each start — and a row in ``service_instance`` whose
``heartbeat_at`` it refreshes every ``heartbeat_seconds``. Every lease names its boot
(``lease_owner`` on ``outbox``, ``inbox_event``, ``backport_feed``).

On its heartbeat each instance also releases, with one UPDATE per table, the leases whose owner's
heartbeat is older than ``instance_dead_after_seconds``; at start it releases at once the leases held
by earlier boots of its own name (a restart need not wait for its own old heartbeat to age). A
released EHR event or Backport feed is free at once. A released message is *in doubt* — the dead
process recorded its attempt before calling the Cloud API, which has no idempotency key, and may have
sent it — so it becomes claimable only after ``in_doubt_grace_seconds``, and its claim skips it if a
status naming it by our callback data was stored meanwhile (:func:`adapter.outbox.claims.claim_due`).

A live instance fences itself: it starts no send once its last recorded heartbeat is older than half
the dead-after time (:meth:`Liveness.alive_until`), so by the time others may take its messages over,
a send it started has ended (settings check: ``whatsapp_timeout_seconds`` at most half the dead-after
time plus the grace). Times are each instance's UTC clock, as for the leases: hosts keep NTP time.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, ScalarSelect, Table, Update, delete, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from adapter.ops.tables import ServiceInstance
from adapter.storage.db import table_of, transaction, utcnow

log = logging.getLogger(__name__)
PRUNE_AFTER = timedelta(days=1)  # a dead boot's row is kept this long (its leases were released long since)
_instance = table_of(ServiceInstance)


def default_name(http_port: int) -> str:
    """The name an instance gets without ``instance_name``: stable across restarts on one host and port."""
    return f"{socket.gethostname()}:{http_port}"[:120]


@dataclass(frozen=True)
class LivenessConfig:
    """Settings: ``heartbeat_seconds``, ``instance_dead_after_seconds``, ``in_doubt_grace_seconds``."""

    heartbeat: timedelta = timedelta(seconds=2)
    dead_after: timedelta = timedelta(seconds=10)
    in_doubt_grace: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class LeasedTable:
    """A work table whose rows carry ``lease_until`` and ``lease_owner`` (the service names them: this
    layer does not import the capabilities). ``in_doubt``: a released row may have been sent by the
    dead owner, so it stays leased (to nobody) for the in-doubt grace instead of being free at once."""

    name: str
    table: Table
    in_doubt: bool = False


@dataclass
class Released:
    """How many leases one release freed, per table name."""

    counts: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def __str__(self) -> str:
        return ", ".join(f"{count} {name}" for name, count in self.counts.items() if count)


@dataclass
class Liveness:
    """This boot's identity and heartbeat. :meth:`start` once, :meth:`beat` on every tick (it writes
    only every ``heartbeat`` seconds), :meth:`stop` at a clean shutdown."""

    engine: Engine
    name: str
    tables: tuple[LeasedTable, ...] = ()
    config: LivenessConfig = field(default_factory=LivenessConfig)
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _beat_at: float = field(default=float("-inf"), init=False)  # monotonic time of the last heartbeat written
    _beat_utc: datetime | None = field(default=None, init=False)

    @property
    def owner(self) -> str:
        """What this boot writes in ``lease_owner``."""
        return self.boot_id

    def start(self) -> Released:
        """Records this boot and releases, at once, the leases of this name's earlier boots (and of any
        dead instance); on SQLite, the only instance, that is the one release it needs."""
        now = utcnow()
        with transaction(self.engine) as session:
            session.add(ServiceInstance(boot_id=self.boot_id, name=self.name, started_at=now, heartbeat_at=now))
        self._beat_at, self._beat_utc = time.monotonic(), now
        released = self.release(now, restart=True)
        if released:
            log.warning("instance %s took over leases of an earlier boot or a dead instance: %s", self.name, released)
        return released

    def beat(self) -> Released:
        """Refreshes the heartbeat when due and, on PostgreSQL, releases dead instances' leases."""
        if time.monotonic() - self._beat_at < 0.8 * self.config.heartbeat.total_seconds():  # a tick's jitter
            return Released()
        now = utcnow()
        with transaction(self.engine) as session:
            # An instance another one took for dead (a long stall) and pruned comes back with its row.
            if not _count(session, update(_instance).where(_instance.c.boot_id == self.boot_id)
                          .values(heartbeat_at=now)):
                session.add(ServiceInstance(boot_id=self.boot_id, name=self.name, started_at=now, heartbeat_at=now))
        self._beat_at, self._beat_utc = time.monotonic(), now
        if self.engine.dialect.name != "postgresql":
            return Released()  # SQLite runs one instance: nobody else's leases to release
        released = self.release(now)
        if released:
            log.warning("instance %s took over leases of a dead instance: %s", self.name, released)
        return released

    def alive_until(self) -> datetime | None:
        """Past this moment this instance starts no send: others may soon take it for dead (its last
        recorded heartbeat plus half the dead-after time). None before the first heartbeat."""
        return self._beat_utc + self.config.dead_after / 2 if self._beat_utc is not None else None

    def release(self, now: datetime, *, restart: bool = False) -> Released:
        """One UPDATE per table: the leases of every boot whose heartbeat is older than the dead-after
        time (and, with ``restart``, of this name's earlier boots) are released; outbox rows become
        claimable after the in-doubt grace. Each UPDATE reads the partial index of leased rows by owner."""
        dead: ColumnElement[bool] = _instance.c.heartbeat_at < now - self.config.dead_after
        if restart:
            dead = or_(dead, (_instance.c.name == self.name) & (_instance.c.boot_id != self.boot_id))
        owners = select(_instance.c.boot_id).where(dead, _instance.c.boot_id != self.boot_id).scalar_subquery()
        with transaction(self.engine) as session:
            found = Released({leased.name: _free(session, leased.table, owners,
                                                 now + self.config.in_doubt_grace if leased.in_doubt else None)
                              for leased in self.tables})
            session.execute(delete(_instance).where(_instance.c.heartbeat_at < now - PRUNE_AFTER))
        return found

    def stop(self) -> None:
        """A clean shutdown: this boot is marked dead at once, so whatever it still holds is released by
        the next heartbeat of another instance (or by its own restart), not after the dead-after time."""
        try:
            with transaction(self.engine) as session:
                session.execute(update(_instance).where(_instance.c.boot_id == self.boot_id)
                                .values(heartbeat_at=utcnow() - self.config.dead_after - timedelta(seconds=1)))
        except SQLAlchemyError as error:
            log.warning("could not mark this instance stopped (%s); its heartbeat ages out", type(error).__name__)


def _free(session: Session, table: Table, owners: ScalarSelect[str], until: datetime | None) -> int:
    """Releases ``table``'s leases held by ``owners``: ``lease_until`` becomes ``until`` (None: free now)."""
    return _count(session, update(table).where(table.c.lease_until.is_not(None), table.c.lease_owner.in_(owners))
                  .values(lease_until=until, lease_owner=None))


def _count(session: Session, statement: Update) -> int:
    """Runs an UPDATE; how many rows it changed."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount or 0)
