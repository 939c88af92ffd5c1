"""Cost per event as history grows: the same batch with 1,000 and with 1,000,000 rows already stored.

    python bench/growth.py                                   # N=300, 3 rounds, SQLite
    python bench/growth.py --database postgresql
    python bench/growth.py --history 200000 -n 200 --rounds 1

Goal: the service's CPU and its SQL statements per booked appointment with 1M rows of history stay
within 20 % of those with 1k (ratio 1M/1k <= 1.2). The claims read only claimable rows (partial
indexes, adapter/storage/claimable.py) and every per-event lookup goes through an index, so what
is finished or far in the future should cost nothing per new event.

History, loaded in bulk (multi-row Core inserts of --chunk rows) into a migrated database, then
VACUUM ANALYZE on PostgreSQL (what autovacuum would have done; SQLite gets no ANALYZE, as in
production): 40 % finished inbox events (``done``, 1 % ``dead``), 40 % sent outbox rows, 15 %
applied statuses of those sends (``wa_status``) and 5 % reminders queued 30+ days ahead (never
claimed), timestamped over the last 30 days (inside every retention period, so nothing is purged
during the run). Each size is loaded once into a seed (a SQLite file or a PostgreSQL template
database); every run starts from a fresh copy of its seed.

Each run processes N booked appointments with the real service in this process, as
bench/work_per_event.py does (``create_app`` under uvicorn; the sandbox EHR and the emulator as
subprocesses; EHR subscriptions off, N notifications PUT concurrently): decide, send, and the three
status webhooks of each message. The window opens at the first PUT and closes when all 3N new
statuses are applied. Measured in it:

- service CPU: this process's CPU time minus its main thread's (the main thread only sends the
  PUTs and polls for completion, through its own engine);
- on PostgreSQL, database CPU: the CPU of the server's backends serving the run's database (from
  /proc, so the server must run on this machine; else "-"), since a query that reads history costs
  there, not in the service. Ratios are then also printed for it and for service + database;
- SQL statements: ``before_cursor_execute`` on every engine, main thread left out (WorkCounter);
- events/s: N / (last send - first PUT), instrumented (listeners on), so not a throughput figure;
- driver time per statement shape (``before``/``after_cursor_execute``, wall time, so it includes
  waits for the GIL and locks): the shapes that grew most are printed, to point at a query that
  reads history.

Statements per event are not fully deterministic: how many events one claim or one status batch
takes depends on timing, so a slower run batches more and issues fewer statements per event.

An idle baseline (statements and CPU per second with nothing to do, just before the PUTs) is
printed beside each run: a loop that scans history on every tick shows there. Rounds alternate the
order (1k then 1M, 1M then 1k, ...) so drift in the shared machine's load falls on both sizes;
ratios are taken within a round, and their min/median/max printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from adapter.app import create_app
from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.feeds.tables import InboxEvent
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.settings import load_settings
from adapter.storage.db import make_engine, table_of, upgrade, utcnow
from bench.harness import serve
from bench.machine_info import machine
from bench.pipeline_throughput import (
    STARTUP_TIMEOUT,
    Database,
    Stack,
    _bridge_command,
    _clean_env,
    _get_json,
    _wait,
    cpu_seconds,
    digits,
    fictional_numbers,
    run_burst,
)
from bench.webhook_ack import DEFAULT_PG_URL, _interrupt, tally_logs
from bench.work_per_event import STATUSES_PER_SEND, WindowStart, WorkCounter

SHARES = {"inbox_event done": 0.40, "outbox sent": 0.40, "wa_status applied": 0.15, "outbox reminders": 0.05}
RULE = "appointment-booked-confirmation"
PAYLOAD = json.dumps({"name": "appointment_confirmation", "language": {"code": "en_US"}, "components": []})
CIPHERTEXT = "v1." + "A" * 120  # stands in for an encrypted number: the size of one, no number in it


# --------------------------------------------------------------------------- history


def split(total: int) -> dict[str, int]:
    counts = {kind: int(total * share) for kind, share in SHARES.items()}
    counts["inbox_event done"] += total - sum(counts.values())
    return counts


def _rows(kind: str, start: int, stop: int, total: int) -> list[dict[str, Any]]:
    now = utcnow()
    step = timedelta(days=30) / max(total, 1)
    rows: list[dict[str, Any]] = []
    for n in range(start, stop):
        at = now - timedelta(days=30) + n * step
        if kind == "inbox_event done":
            rows.append({"dedupe_key": f"Appointment/hist-{n}/_history/1", "kind": "resource",
                         "subscription_key": "appointment", "resource_type": "Appointment",
                         "resource_id": f"hist-{n}", "version_id": "1", "state": "dead" if n % 100 == 0 else "done",
                         "attempts": 1, "next_attempt_at": at, "received_at": at, "processed_at": at})
        elif kind in ("outbox sent", "outbox reminders"):
            sent = kind == "outbox sent"
            rows.append({"natural_key": f"{RULE}:Appointment/hist-{n}/_history/1" if sent else
                         f"reminder:Appointment/hist-r{n}:20990101T0900Z:2880m",
                         "rule_id": RULE if sent else f"{RULE}-reminder",
                         "resource_ref": f"Appointment/hist-{n if sent else f'r{n}'}",
                         "patient_ref": f"Patient/hist-{n % 50_000}", "recipient_enc": CIPHERTEXT, "payload": PAYLOAD,
                         "state": "sent" if sent else "queued",
                         "due_at": at if sent else now + timedelta(days=30, seconds=n),
                         "attempts": 1 if sent else 0, "wamid": f"wamid.HIST{n}" if sent else None,
                         "delivery_status": "read" if sent else None,
                         "delivery_status_ts": int(at.timestamp()) if sent else None,
                         "created_at": at, "updated_at": at, "sent_at": at if sent else None,
                         "recipient_key": hashlib.sha256(b"hist-%d" % (n % 50_000)).digest(), "purpose": "notify"})
        else:  # the statuses of the first sent rows, three each
            status = ("sent", "delivered", "read")[n % 3]
            rows.append({"dedupe_key": f"wamid.HIST{n // 3}:{status}", "wamid": f"wamid.HIST{n // 3}",
                         "status": status, "meta_timestamp": int(at.timestamp()), "received_at": at, "applied_at": at})
    return rows


_TABLES: dict[str, type[SQLModel]] = {"inbox_event done": InboxEvent, "outbox sent": OutboxMessage,
                                      "outbox reminders": OutboxMessage, "wa_status applied": WhatsAppStatus}


def load_history(url: str, total: int, chunk: int) -> dict[str, Any]:
    """Migrates the database at ``url`` and fills it; returns what it loaded and how long it took."""
    engine = make_engine(url)
    started = time.perf_counter()
    try:
        upgrade(engine)
        counts = split(total)
        for kind, count in counts.items():
            table = table_of(_TABLES[kind])
            for start in range(0, count, chunk):
                with engine.begin() as connection:
                    connection.execute(insert(table), _rows(kind, start, min(count, start + chunk), total))
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return {"rows": counts, "load_seconds": round(time.perf_counter() - started, 1)}


@dataclass
class Seeds:
    """One loaded database per history size; each run gets a fresh copy (a SQLite file copy, or
    CREATE DATABASE … TEMPLATE on PostgreSQL)."""

    kind: str
    pg_url: str
    folder: Path
    made: dict[int, str]
    loaded: dict[int, dict[str, Any]]

    def _admin(self) -> Engine:
        return create_engine(self.pg_url, isolation_level="AUTOCOMMIT")

    def _pg(self, statement: str) -> None:
        engine = self._admin()
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def name(self, label: str) -> str:
        return f"bench_growth_{os.getpid()}_{label}"

    def seed(self, history: int, chunk: int) -> dict[str, Any]:
        if history not in self.made:
            if self.kind == "sqlite":
                url = f"sqlite:///{self.folder / f'seed-{history}.db'}"
            else:
                self._pg(f'CREATE DATABASE "{self.name(f"seed{history}")}"')
                url = make_url(self.pg_url).set(database=self.name(f"seed{history}")).render_as_string(False)
            self.made[history] = url
            self.loaded[history] = load_history(url, history, chunk)
        return self.loaded[history]

    @contextmanager
    def copy(self, history: int, run: int) -> Iterator[str]:
        if self.kind == "sqlite":
            path = self.folder / f"run-{run}" / "bridge.db"
            path.parent.mkdir()
            shutil.copyfile(make_url(self.made[history]).database or "", path)  # WAL checkpointed on dispose
            try:
                yield f"sqlite:///{path}"
            finally:
                shutil.rmtree(path.parent, ignore_errors=True)
            return
        name = self.name(f"run{run}")
        self._pg(f'CREATE DATABASE "{name}" TEMPLATE "{self.name(f"seed{history}")}"')
        try:
            yield make_url(self.pg_url).set(database=name).render_as_string(False)
        finally:
            self._pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop(self) -> None:
        if self.kind == "postgresql":
            for history in self.made:
                self._pg(f'DROP DATABASE IF EXISTS "{self.name(f"seed{history}")}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- one run


_PARAMS = re.compile(r"(\?|%\([a-z0-9_]+\)s|:[a-z0-9_]+)(\s*,\s*(\?|%\([a-z0-9_]+\)s|:[a-z0-9_]+))+")


class SqlTimer:
    """Wall time inside the database driver per statement shape (parameter lists collapsed), main
    thread left out: where a growing table costs more per event shows as one shape that grows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = threading.local()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def install(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def reset(self) -> dict[str, tuple[float, int]]:
        with self.lock:
            taken = {shape: (self.seconds[shape], self.calls[shape]) for shape in self.seconds}
            self.seconds, self.calls = defaultdict(float), Counter()
        return taken

    def _before(self, *_args: Any) -> None:
        self.started.at = time.perf_counter()

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        at = getattr(self.started, "at", None)
        if at is None or threading.current_thread() is threading.main_thread():
            return
        shape = _PARAMS.sub("…", " ".join(statement.split()))[:150]
        with self.lock:
            self.seconds[shape] += time.perf_counter() - at
            self.calls[shape] += 1


TIMER = SqlTimer()


def main_thread_excluded_cpu() -> float:
    """CPU seconds of every thread of this process but the calling (main) one, so far."""
    return time.process_time() - time.thread_time()


def backend_cpu(check: Engine) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving this database, but ``check``'s own
    (its pool holds one connection); read from /proc, so only for a server on this machine."""
    if check.dialect.name != "postgresql":
        return {}
    with check.connect() as connection:
        pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid()")).scalars().all()
    return {pid: cpu_seconds(pid) for pid in pids}


class CpuWindow(WindowStart):
    """work_per_event's window (idle baseline, then counting) that also reads the service's CPU and,
    on PostgreSQL, its backends' (a query that reads history costs there, not in the service)."""

    def __init__(self, counter: WorkCounter, idle_seconds: float, check: Engine) -> None:
        super().__init__(counter, idle_seconds)
        self.check = check

    def start(self) -> None:
        before = main_thread_excluded_cpu()
        super().start()
        self.idle_cpu = main_thread_excluded_cpu() - before
        TIMER.reset()
        self.backends_at = backend_cpu(self.check)
        self.cpu_at = main_thread_excluded_cpu()

    def db_cpu(self) -> float | None:
        """Backend CPU since the window opened (a backend opened since then counts from zero)."""
        now = backend_cpu(self.check)
        if not now or not any(now.values()):
            return None
        return sum(cpu - self.backends_at.get(pid, 0.0) for pid, cpu in now.items())


def run_once(args: argparse.Namespace, counter: WorkCounter, seeds: Seeds, history: int, run: int,
             numbers: list[str]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    try:
        with seeds.copy(history, run) as url:
            stack = Stack(workdir, Database(url))
            try:
                return {"history": history, **_measure(args, counter, stack, numbers)}
            finally:
                stack.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(args: argparse.Namespace, counter: WorkCounter, stack: Stack, numbers: list[str]) -> dict[str, Any]:
    # The main thread's own engine, one connection: not counted, not the service's pool.
    check = (make_engine(stack.database.url) if stack.database.url.startswith("sqlite") else
             create_engine(stack.database.url, pool_size=1, max_overflow=0))
    with check.connect() as connection:
        last_status = connection.execute(select(func.coalesce(func.max(table_of(WhatsAppStatus).c.id), 0))).scalar_one()
        last_outbox = connection.execute(select(func.coalesce(func.max(table_of(OutboxMessage).c.id), 0))).scalar_one()
    stack.ehr = SandboxEhr(stack.workdir / "ehr").start()
    service_port, emulator_port = free_port(), free_port()
    stack.service_url, stack.emulator_url = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{emulator_port}"
    counter.targets = {urlsplit(stack.ehr.base_url).port or 0: "ehr", emulator_port: "whatsapp"}
    stack.emulator = stack._spawn(
        [*_bridge_command(), "emulator", "--port", str(emulator_port), "--webhook-url",
         f"{stack.service_url}/whatsapp/webhook", "--public-base-url", stack.service_url], _clean_env(), "emulator.log")
    _wait(lambda: _get_json(f"{stack.emulator_url}/_emulator/health"), STARTUP_TIMEOUT, "the emulator",
          stack.ensure_alive)
    settings = load_settings(mode="demo", database_url=stack.database.url, fhir_base_url=stack.ehr.base_url,
                             public_base_url=stack.service_url, portal_base_url=f"{stack.service_url}/portal-demo",
                             whatsapp_api_base_url=stack.emulator_url, consent_source="assume", tick_seconds=args.tick)
    window = CpuWindow(counter, args.idle_seconds, check)
    statuses = table_of(WhatsAppStatus)
    new_applied = (select(func.count()).select_from(statuses)
                   .where(statuses.c.id > last_status, statuses.c.applied_at.is_not(None)))
    try:
        with tally_logs() as logs, serve(create_app(settings), lifespan="on", port=service_port):
            def subscribed() -> bool:
                subs = (_get_json(f"{stack.service_url}/health") or {}).get("subscriptions") or []
                return bool(subs) and all(s["status"] == "active" for s in subs)

            _wait(subscribed, STARTUP_TIMEOUT, "the service's EHR subscriptions", stack.ensure_alive)
            burst = asyncio.run(run_burst(stack, numbers, 16, args.burst_concurrency, window))  # type: ignore[arg-type]

            def applied() -> bool:
                with check.connect() as connection:
                    return int(connection.execute(new_applied).scalar_one()) >= STATUSES_PER_SEND * len(numbers)

            _wait(applied, args.timeout, "the new statuses to be applied", stack.ensure_alive, every=0.1)
            cpu = main_thread_excluded_cpu() - window.cpu_at  # the window closes as the last status is applied
            db_cpu = window.db_cpu()
            work, sql = counter.snapshot(), TIMER.reset()
            messages = (_get_json(f"{stack.emulator_url}/_emulator/messages") or {}).get("messages", [])
        with check.connect() as connection:
            outbox = table_of(OutboxMessage)
            by_state = select(outbox.c.state, func.count()).where(
                outbox.c.id > last_outbox, outbox.c.rule_id == RULE).group_by(outbox.c.state)
            states: dict[str, int] = {state: count for state, count in connection.execute(by_state)}
    finally:
        check.dispose()
    sent_at: dict[str, float] = {}
    for message in messages:
        if message.get("type") == "template":
            who = digits(str((message.get("payload") or {}).get("to") or message.get("wa_id") or ""))
            sent_at[who] = min(sent_at.get(who, float("inf")), float(message["accepted_at"]))
    sends = [sent_at[who] for who in burst.event_at if who in sent_at]
    n, idle = len(numbers), window.idle
    span = max(max(sends, default=0.0) - min(burst.event_at.values()), 1e-9)
    return {"events_per_s": round(len(sends) / span, 1), "window_s": round(work["seconds"], 1),
            "cpu_ms_per_event": round(1000 * cpu / n, 2), "statements_per_event": round(work["statements"] / n, 2),
            "db_cpu_ms_per_event": None if db_cpu is None else round(1000 * db_cpu / n, 2),
            "total_cpu_ms_per_event": round(1000 * (cpu + (db_cpu or 0.0)) / n, 2),
            "idle_statements_per_s": round(idle["statements"] / idle["seconds"], 1),
            "idle_cpu_ms_per_s": round(1000 * window.idle_cpu / idle["seconds"], 1),
            "sql_ms_per_event": {shape: [round(1000 * seconds / n, 3), round(calls / n, 3)]
                                 for shape, (seconds, calls) in sql.items()},
            "all_sent": len(sends) == n and states.get("sent", 0) == n and len(states) == 1,
            "confirmations_by_state": states, "service_log_records": dict(logs.counts), "service_log_first": logs.first}


# --------------------------------------------------------------------------- main


def summarise(runs: list[dict[str, Any]], small: int, large: int) -> dict[str, Any]:
    ratios: dict[str, list[float]] = {"cpu_ms_per_event": [], "statements_per_event": []}
    if all(r["db_cpu_ms_per_event"] for r in runs):
        ratios.update(db_cpu_ms_per_event=[], total_cpu_ms_per_event=[])
    for round_no in sorted({r["round"] for r in runs}):
        pair = {r["history"]: r for r in runs if r["round"] == round_no}
        if small in pair and large in pair:
            for key, values in ratios.items():
                values.append(round(pair[large][key] / pair[small][key], 3))
    return {key: {"min": min(v), "median": statistics.median(v), "max": max(v), "all": v} if v else None
            for key, v in ratios.items()}


def sql_growth(runs: list[dict[str, Any]], small: int, large: int, top: int = 8) -> list[str]:
    """The statement shapes whose driver time per event grew most (medians over the rounds)."""
    def median_of(history: int, shape: str, index: int) -> float:
        return statistics.median(r["sql_ms_per_event"].get(shape, [0.0, 0.0])[index]
                                 for r in runs if r["history"] == history)

    shapes = {shape for r in runs for shape in r["sql_ms_per_event"]}
    rows = sorted(((median_of(large, s, 0) - median_of(small, s, 0), s) for s in shapes), reverse=True)[:top]
    lines = [f"  driver time per event (ms, median), by statement, largest growth first ({small:,} → {large:,}):"]
    lines += [f"    {median_of(small, s, 0):7.3f} → {median_of(large, s, 0):7.3f} ms  "
              f"({median_of(small, s, 1):.2f} → {median_of(large, s, 1):.2f} calls)  {s[:110]}" for _, s in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="booked appointments per run (default 300)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help=f"PostgreSQL server (default {DEFAULT_PG_URL})")
    parser.add_argument("--small", type=int, default=1000, help="rows of history of the small runs (default 1000)")
    parser.add_argument("--history", type=int, default=1_000_000, help="rows of history of the large runs (1M)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, order alternating (default 3)")
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per bulk INSERT (default 10000)")
    parser.add_argument("--tick", type=float, default=1.0, help="tick_seconds (default 1.0, the service's default)")
    parser.add_argument("--burst-concurrency", type=int, default=64, help="concurrent notifications (default 64)")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="idle baseline per run (default 2 s)")
    parser.add_argument("--timeout", type=float, default=300, help="longest wait for one run's statuses (s)")
    args = parser.parse_args()
    if not 1 <= args.n <= 5000 or args.rounds < 1 or not 0 <= args.small < args.history:
        parser.error("need 1 <= n <= 5000, rounds >= 1 and 0 <= --small < --history")
    signal.signal(signal.SIGTERM, _interrupt)
    counter = WorkCounter()
    counter.install()
    TIMER.install()
    numbers = fictional_numbers(args.n)
    print(json.dumps({"machine": machine(), "n": args.n, "database": args.database, "tick_seconds": args.tick}))
    seeds = Seeds(args.database, args.pg_url, Path(tempfile.mkdtemp(prefix="bench-growth-seeds-")), {}, {})
    runs: list[dict[str, Any]] = []
    try:
        for history in (args.small, args.history):
            print(json.dumps({"seed": history, **seeds.seed(history, args.chunk)}), flush=True)
        for round_no in range(args.rounds):
            order = (args.small, args.history) if round_no % 2 == 0 else (args.history, args.small)
            for history in order:
                result = {"round": round_no + 1, **run_once(args, counter, seeds, history, len(runs), numbers)}
                runs.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "sql_ms_per_event"}), flush=True)
    finally:
        seeds.drop()
    print(f"\n== cost per booked appointment, {args.small:,} vs {args.history:,} rows of history "
          f"({args.database}, N={args.n}, tick {args.tick} s)")
    print(f"  {'round':>5} {'history':>10} {'events/s':>9} {'CPU ms/ev':>10} {'DB CPU ms/ev':>12} {'SQL/ev':>7} "
          f"{'idle SQL/s':>10} {'idle CPU ms/s':>13}  all sent")
    for r in runs:
        print(f"  {r['round']:>5} {r['history']:>10,} {r['events_per_s']:>9} {r['cpu_ms_per_event']:>10} "
              f"{r['db_cpu_ms_per_event'] if r['db_cpu_ms_per_event'] is not None else '-':>12} "
              f"{r['statements_per_event']:>7} {r['idle_statements_per_s']:>10} {r['idle_cpu_ms_per_s']:>13}  "
              f"{r['all_sent']}")
    summary = summarise(runs, args.small, args.history)
    for key, stats in summary.items():
        if stats:
            verdict = "within" if stats["max"] <= 1.2 else "NOT within"
            print(f"  ratio {args.history:,}/{args.small:,} of {key}: min {stats['min']}, median {stats['median']}, "
                  f"max {stats['max']}  ({verdict} 1.2 in every round)")
    print("\n".join(sql_growth(runs, args.small, args.history)))
    print(json.dumps({"ratios": summary}))


if __name__ == "__main__":
    main()
