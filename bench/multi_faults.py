"""SIGKILL rounds of :mod:`bench.multi_instance`: which instance dies and when, what its boot held at the
kill, how long until all of it was taken over, and a busy loop per CPU core for a loaded machine."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine

from adapter.storage.db import make_engine

if TYPE_CHECKING:
    from bench.multi_instance import Cluster


@dataclass
class Kill:
    """SIGKILL instance ``index`` after ``after`` notifications; start it again ``restart_after`` s later."""

    after: int
    index: int
    restart_after: float | None = None
    at: float | None = field(default=None, init=False)  # monotonic time of the kill
    boot: str | None = field(default=None, init=False)  # the killed boot's id
    held: dict[str, set[int]] = field(default_factory=dict, init=False)  # what it held when killed
    recover_s: float | None = field(default=None, init=False)  # until all it held was taken over or finished
    watcher: threading.Thread | None = field(default=None, init=False)


def kill_now(cluster: Cluster, kill: Kill) -> None:
    """SIGKILLs the instance once it holds claims, notes what its boot held, starts timing the takeover
    and, with ``restart_after``, starts the instance again under the same name."""
    engine = make_engine(cluster.database.url)
    try:
        with engine.connect() as connection:
            kill.boot = connection.execute(text(
                "SELECT boot_id FROM service_instance WHERE name = :name ORDER BY started_at DESC LIMIT 1"),
                {"name": cluster.instance_name(kill.index)}).scalar()
        _until_holding(engine, kill.boot)  # mid-run means holding claims: a kill between two claims proves little
        cluster.kill(kill.index)
        kill.at = time.monotonic()
        with engine.connect() as connection:  # after the kill: nothing it held can change hands but by takeover
            kill.held = {table: set(connection.execute(text(
                f"SELECT id FROM {table} WHERE lease_owner = :boot AND lease_until IS NOT NULL"),
                {"boot": kill.boot}).scalars()) for table in ("outbox", "inbox_event")}
    finally:
        engine.dispose()
    kill.watcher = threading.Thread(target=_watch_recovery, args=(cluster, kill), daemon=True)
    kill.watcher.start()
    if kill.restart_after is not None:
        timer = threading.Timer(kill.restart_after, cluster.restart, (kill.index,))
        timer.daemon = True
        timer.start()


def _until_holding(engine: Engine, boot: str | None, wait: float = 5.0) -> None:
    """Waits (bounded) until ``boot`` holds a lease on an outbox row or an EHR event."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(text(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE lease_owner = :boot AND lease_until IS NOT NULL) "
                    "OR EXISTS (SELECT 1 FROM inbox_event WHERE lease_owner = :boot AND lease_until IS NOT NULL)"),
                    {"boot": boot}).scalar():
                return
        time.sleep(0.02)


_FINISHED = {"outbox": "state NOT IN ('queued', 'sending')", "inbox_event": "state <> 'pending'"}


def _watch_recovery(cluster: Cluster, kill: Kill, timeout: float = 180.0) -> None:
    """Sets ``kill.recover_s``: seconds from the kill until every row the killed boot held is finished
    or held by another boot (polled every 0.2 s, from the kill on)."""
    engine = make_engine(cluster.database.url)
    try:
        assert kill.at is not None
        while time.monotonic() - kill.at < timeout:
            with engine.connect() as connection:
                left = sum(connection.execute(text(
                    f"SELECT count(*) FROM {table} WHERE id = ANY(:ids) AND NOT ({_FINISHED[table]}) "
                    "AND (lease_owner IS NULL OR lease_owner = :boot)"),
                    {"ids": list(ids), "boot": kill.boot}).scalar() or 0 for table, ids in kill.held.items() if ids)
            if not left:
                kill.recover_s = round(time.monotonic() - kill.at, 1)
                return
            time.sleep(0.2)
    finally:
        engine.dispose()


@contextmanager
def cpu_load(processes: int | None = None) -> Iterator[int]:
    """A busy loop per CPU core (or ``processes``), stopped on exit: a loaded machine."""
    count = processes or os.cpu_count() or 1
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for process in busy:
            process.kill()
            process.wait(timeout=10)
