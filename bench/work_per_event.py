"""Work per booked appointment: SQL statements, transactions, thread hops and HTTP calls, counted.

    python bench/work_per_event.py                          # N=200, temp SQLite file
    python bench/work_per_event.py --database postgresql -n 500

What one booked appointment costs the service, end to end: the EHR notification, the decision, the
send and the three status webhooks (sent, delivered, read) the WhatsApp emulator posts back,
amortised over a batch of N. The real service (``adapter.app.create_app``, lifespan on, demo mode,
consent_source=assume) runs in this process under uvicorn (bench/harness.py); the sandbox EHR
(sekmet-fhir, SandboxEhr) and the emulator (``bridge emulator``) run as subprocesses. As in
``pipeline_throughput.py --mode burst`` the EHR's subscriptions are turned off, N patients and
booked appointments are created, then N notifications are PUT at the intake concurrently.

Counted while the batch is processed, in every thread but this script's main thread (the load
driver and the settle checks run there, so they are not counted):

- SQL: SQLAlchemy ``before_cursor_execute`` on every Engine (one count per round trip; an
  ``executemany`` counts once), by first keyword and by first table named after FROM/INTO/UPDATE;
- transactions: the ``begin``, ``commit`` and ``rollback`` connection events;
- thread hops: ``ThreadPoolExecutor.submit`` (``asyncio.to_thread``/``run_in_executor``) and
  ``anyio.to_thread.run_sync`` (sync FastAPI routes);
- HTTP calls by target (EHR or WhatsApp): ``httpx.AsyncClient.send`` and ``aiohttp`` requests,
  counting the outermost layer (the EHR client is httpx over aiohttp).

The window ends when the emulator accepted N messages and all 3N statuses are applied. The
service's background loop polls even when idle, so an idle baseline (statements per second with no
work) is measured first and "net" = total - baseline rate x window: a lower bound, since a busy
loop skips some of its idle polls. The default tick is the service's own (1 s). Counts are deterministic-ish:
batch sizes depend on timing (how many events arrive per claim), so they move by a few per cent
from run to run; the ratios between kinds are stable.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import anyio.to_thread
import httpx
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from adapter.app import create_app
from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.settings import load_settings
from bench.harness import fresh_database, serve
from bench.machine_info import machine
from bench.pipeline_throughput import (
    STARTUP_TIMEOUT,
    Database,
    Stack,
    _bridge_command,
    _clean_env,
    _get_json,
    _wait,
    collect,
    fictional_numbers,
    run_burst,
)
from bench.webhook_ack import DEFAULT_PG_URL, _interrupt, tally_logs

STATUSES_PER_SEND = 3  # sent, delivered, read: the emulator's default
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z_][A-Za-z0-9_]*)', re.IGNORECASE)


class WorkCounter:
    """Counts the service's work; the main thread (load driver, settle checks) is left out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.targets: dict[int, str] = {}  # port -> "ehr" / "whatsapp"
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.sql: Counter[str] = Counter()  # kind
            self.tables: Counter[str] = Counter()  # "KIND table"
            self.tx: Counter[str] = Counter()  # begin / commit / rollback
            self.hops: Counter[str] = Counter()
            self.http: Counter[str] = Counter()  # "layer target"
            self.since = time.monotonic()

    def _ours(self) -> bool:
        return threading.current_thread() is not threading.main_thread()

    def statement(self, statement: str, executemany: bool) -> None:
        if not self._ours():
            return
        words = statement.lstrip().split(None, 1)
        kind = words[0].upper() if words else "?"
        kind = kind if kind in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH") else "other"
        match = _TABLE.search(statement)
        with self.lock:
            self.sql[kind] += 1
            self.tables[f"{kind} {match.group(1).lower() if match else '-'}"] += 1
            self.sql["executemany"] += executemany  # also counted under its kind

    def count(self, bucket: str, key: str) -> None:
        if self._ours():
            with self.lock:
                getattr(self, bucket)[key] += 1

    def target(self, url: Any) -> str:
        return self.targets.get(urlsplit(str(url)).port or 0, "other")

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            http = Counter({key: value for key, value in self.http.items()})
            by_target = {target: max(http.get(f"httpx {target}", 0), http.get(f"aiohttp {target}", 0))
                         for target in ("ehr", "whatsapp", "other")}
            return {"seconds": time.monotonic() - self.since, "sql": dict(self.sql),
                    "statements": sum(self.sql.values()) - self.sql["executemany"], "tables": dict(self.tables),
                    "tx": dict(self.tx),
                    "hops": sum(self.hops.values()), "hops_by": dict(self.hops), "http": by_target,
                    "http_layers": dict(http)}

    def install(self) -> None:
        """Engine-class listeners (every engine the service makes) and wrappers around the thread
        and HTTP entry points; for the life of this process."""
        event.listen(Engine, "before_cursor_execute",
                     lambda _c, _cur, statement, _params, _context, many: self.statement(statement, many))
        for name in ("begin", "commit", "rollback"):
            event.listen(Engine, name, lambda *_a, name=name: self.count("tx", name))
        submit = concurrent.futures.ThreadPoolExecutor.submit

        def counted_submit(executor: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.count("hops", "executor")
            return submit(executor, fn, *args, **kwargs)

        concurrent.futures.ThreadPoolExecutor.submit = counted_submit  # type: ignore[method-assign]
        run_sync = anyio.to_thread.run_sync

        async def counted_run_sync(*args: Any, **kwargs: Any) -> Any:
            self.count("hops", "anyio")
            return await run_sync(*args, **kwargs)

        anyio.to_thread.run_sync = counted_run_sync  # type: ignore[assignment]
        send = httpx.AsyncClient.send

        async def counted_send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            self.count("http", f"httpx {self.target(request.url)}")
            return await send(client, request, *args, **kwargs)

        httpx.AsyncClient.send = counted_send  # type: ignore[method-assign]
        request = aiohttp.ClientSession._request

        async def counted_request(session: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            self.count("http", f"aiohttp {self.target(url)}")
            return await request(session, method, url, *args, **kwargs)

        aiohttp.ClientSession._request = counted_request  # type: ignore[method-assign]


class WindowStart:
    """Stands in for run_burst's profiler: just before the PUTs, measure the idle baseline, then
    open the counted window."""

    def __init__(self, counter: WorkCounter, idle_seconds: float) -> None:
        self.counter, self.idle_seconds = counter, idle_seconds
        self.idle: dict[str, Any] = {}

    def start(self) -> None:
        self.counter.reset()
        time.sleep(self.idle_seconds)
        self.idle = self.counter.snapshot()
        self.counter.reset()

    def stop(self) -> None:
        pass


def applied_statuses(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM wa_status WHERE applied_at IS NOT NULL"))
                       .scalar_one())
    finally:
        engine.dispose()


def run(args: argparse.Namespace, counter: WorkCounter) -> dict[str, Any]:
    numbers = fictional_numbers(args.n)
    workdir = Path(tempfile.mkdtemp(prefix="bench-work-per-event-"))
    try:
        with fresh_database(args.database, args.pg_url, "bench_work_per_event") as (url, described):
            stack = Stack(workdir, Database(url))
            try:
                return _measure(args, counter, stack, numbers, described)
            finally:
                stack.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(args: argparse.Namespace, counter: WorkCounter, stack: Stack, numbers: list[str],
             described: str) -> dict[str, Any]:
    stack.ehr = SandboxEhr(stack.workdir / "ehr").start()
    service_port, emulator_port = free_port(), free_port()
    stack.service_url = f"http://127.0.0.1:{service_port}"
    stack.emulator_url = f"http://127.0.0.1:{emulator_port}"
    counter.targets = {urlsplit(stack.ehr.base_url).port or 0: "ehr", emulator_port: "whatsapp"}
    stack.emulator = stack._spawn(
        [*_bridge_command(), "emulator", "--port", str(emulator_port), "--webhook-url",
         f"{stack.service_url}/whatsapp/webhook", "--public-base-url", stack.service_url], _clean_env(),
        "emulator.log")
    _wait(lambda: _get_json(f"{stack.emulator_url}/_emulator/health"), STARTUP_TIMEOUT, "the emulator",
          stack.ensure_alive)
    settings = load_settings(mode="demo", database_url=stack.database.url, fhir_base_url=stack.ehr.base_url,
                             public_base_url=stack.service_url, portal_base_url=f"{stack.service_url}/portal-demo",
                             whatsapp_api_base_url=stack.emulator_url, consent_source="assume",
                             tick_seconds=args.tick)
    window = WindowStart(counter, args.idle_seconds)
    with tally_logs() as logs, serve(create_app(settings), lifespan="on", port=service_port):
        def subscribed() -> bool:
            subs = (_get_json(f"{stack.service_url}/health") or {}).get("subscriptions") or []
            return bool(subs) and all(s["status"] == "active" for s in subs)

        _wait(subscribed, STARTUP_TIMEOUT, "the service's EHR subscriptions", stack.ensure_alive)
        burst = asyncio.run(run_burst(stack, numbers, 16, args.burst_concurrency, window))  # type: ignore[arg-type]
        expected = STATUSES_PER_SEND * args.n
        _wait(lambda: applied_statuses(stack.database.url) >= expected, args.timeout,
              f"{expected} applied statuses", stack.ensure_alive, every=0.1)
        work = counter.snapshot()  # the window closes as the last status is applied
        outcome = collect(stack, burst, args.timeout)
    return {"database": described, "n": args.n, "tick_seconds": args.tick, "idle": window.idle, "work": work,
            "events_per_s_instrumented": outcome["events_per_s"], "all_sent": outcome["all_sent"],
            "service_log_records": dict(logs.counts), "service_log_first": logs.first}


def per_event(result: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(what, total per appointment, net of the idle baseline per appointment)."""
    n, work, idle = result["n"], result["work"], result["idle"]
    scale = work["seconds"] / idle["seconds"] if idle.get("seconds") else 0.0

    def row(name: str, total: float, baseline: float) -> tuple[str, float, float]:
        return name, round(total / n, 2), round(max(0.0, total - baseline * scale) / n, 2)

    rows = [row("SQL statements (round trips)", work["statements"], idle.get("statements", 0)),
            row("  of which executemany", work["sql"].get("executemany", 0), idle.get("sql", {}).get("executemany", 0))]
    rows += [row(f"  {kind}", count, idle.get("sql", {}).get(kind, 0))
             for kind, count in sorted(work["sql"].items(), key=lambda item: -item[1]) if kind != "executemany"]
    rows += [row(f"transactions: {name}", work["tx"].get(name, 0), idle.get("tx", {}).get(name, 0))
             for name in ("begin", "commit", "rollback")]
    rows.append(row("thread hops", work["hops"], idle.get("hops", 0)))
    rows += [row(f"HTTP calls to the {target}", work["http"][target], idle.get("http", {}).get(target, 0))
             for target in ("ehr", "whatsapp")]
    top = sorted(work["tables"].items(), key=lambda item: -item[1])[: 16]
    rows += [row(f"  {key}", count, idle.get("tables", {}).get(key, 0)) for key, count in top]
    return rows


def print_table(result: dict[str, Any]) -> None:
    work, idle = result["work"], result["idle"]
    print(f"\n== work per booked appointment (send + {STATUSES_PER_SEND} statuses), N={result['n']}, "
          f"{result['database']}, tick {result['tick_seconds']} s")
    print(f"   window {work['seconds']:.1f} s; idle baseline {idle['statements']} statements in "
          f"{idle['seconds']:.1f} s; all sent: {result['all_sent']}; "
          f"{result['events_per_s_instrumented']} events/s (instrumented, not a throughput figure)")
    rows = per_event(result)
    width = max(len(name) for name, _, _ in rows)
    print(f"  {'':<{width}}  {'total':>8}  {'net':>8}")
    for name, total, net in rows:
        print(f"  {name:<{width}}  {total:>8}  {net:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="booked appointments in the batch (default 200)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help=f"PostgreSQL server (default {DEFAULT_PG_URL})")
    parser.add_argument("--tick", type=float, default=1.0,
                        help="tick_seconds (default 1.0, the service's default: idle polling stays small)")
    parser.add_argument("--burst-concurrency", type=int, default=64, help="concurrent notifications (default 64)")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="idle baseline length (default 3 s)")
    parser.add_argument("--timeout", type=float, default=300, help="longest wait for the batch (s)")
    args = parser.parse_args()
    if not 1 <= args.n <= 5000:
        parser.error("-n must be between 1 and 5000")
    signal.signal(signal.SIGTERM, _interrupt)
    counter = WorkCounter()
    counter.install()
    print(json.dumps({"machine": machine()}))
    result = run(args, counter)
    print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
