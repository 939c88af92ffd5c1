"""Portal link redirect: latency and throughput of ``POST /l/{token}`` at a steady request rate.

    python bench/link_redirect.py                                  # 100 req/s for 10 s, temp SQLite file
    python bench/link_redirect.py --rate 300 --seconds 20
    python bench/link_redirect.py --database postgresql            # fresh database on 127.0.0.1:5432

The real router (``portal_links.routes.build_link_router`` with a ``LinkStore`` and the default
probe guard) is served by uvicorn on a loopback port in a thread of this process, over a migrated
database. ``rate * seconds`` single-use links (``max_opens=1``) are minted before the clock
starts; then an open-loop client (aiohttp, keep-alive pool) POSTs one link every ``1/rate``
seconds, redirects not followed, whether or not earlier answers have arrived. Each POST does the
full work: signature check, the atomic redeem UPDATE and the ``link_request`` INSERT in one
transaction, then ``303``.

Latency is measured from the request's *scheduled* send time to the end of its response (so a
stalled server is not hidden by a client that waits: no coordinated omission); ``service`` is
from the actual send. Afterwards every link must have exactly one open and every request one
``link_request`` row. Caveat: the client shares this process (and its GIL) with the server.
A PostgreSQL database named ``bench_link_redirect_<pid>_<random>`` is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from fastapi import FastAPI
from sqlalchemy import text

from adapter.audit.link_access import LINK_PORTS
from adapter.storage.db import make_engine, transaction, upgrade
from bench.harness import fresh_database, percentile, serve
from bench.machine_info import machine
from portal_links.routes import build_link_router
from portal_links.store import LinkStore
from portal_links.tokens import LinkSigner


async def drive(base: str, tokens: list[str], rate: float) -> tuple[list[float], list[float], Counter[int], float]:
    latencies: list[float] = []
    service: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        async def one(token: str, scheduled: float) -> None:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            async with session.post(f"/l/{token}", allow_redirects=False,
                                    headers={"User-Agent": "Mozilla/5.0 (bench)"}) as response:
                await response.read()
                statuses[response.status] += 1
            done = time.perf_counter()
            latencies.append(done - scheduled)
            service.append(done - sent)

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(token, start + i / rate) for i, token in enumerate(tokens)))
        elapsed = time.perf_counter() - start
    return latencies, service, statuses, elapsed


def run(args: argparse.Namespace) -> dict[str, Any]:
    count = int(args.rate * args.seconds)
    with fresh_database(args.database, args.pg_url, "bench_link_redirect") as (url, description):
        engine = make_engine(url)
        upgrade(engine)
        store = LinkStore(LinkSigner(secrets.token_bytes(32)), timedelta(hours=72), LINK_PORTS)
        tokens = []
        with transaction(engine) as session:
            for i in range(count):
                tokens.append(store.mint(session, purpose="bench", target="report", patient_ref=f"Patient/{i}",
                                         resource_ref=f"DiagnosticReport/{i}", max_opens=1, message_key=f"m{i}"))
        app = FastAPI()
        app.include_router(build_link_router(store, engine, "https://portal.example"))
        with serve(app) as base:
            latencies, service, statuses, elapsed = asyncio.run(drive(base, tokens, args.rate))
        with engine.connect() as connection:
            opens = Counter(int(v) for (v,) in connection.execute(text("SELECT opens FROM link_token")))
            recorded = Counter({outcome: int(n) for outcome, n in connection.execute(
                text("SELECT outcome, count(*) FROM link_request GROUP BY outcome"))})
        engine.dispose()
    latencies.sort()
    service.sort()
    ms = 1000.0
    return {
        "database": description, "target_rate_per_s": args.rate, "seconds": args.seconds, "requests": count,
        "elapsed_s": round(elapsed, 3), "throughput_per_s": round(count / elapsed, 1),
        "statuses": dict(statuses),
        "latency_ms": {"p50": round(percentile(latencies, 50) * ms, 2), "p99": round(percentile(latencies, 99) * ms, 2),
                       "max": round(latencies[-1] * ms, 2)},
        "service_ms": {"p50": round(percentile(service, 50) * ms, 2), "p99": round(percentile(service, 99) * ms, 2)},
        "every_link_opened_once": opens == Counter({1: count}),
        "link_request_rows": dict(recorded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=100.0, help="POSTs per second (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    print(json.dumps({"machine": machine()}))
    result = run(args)
    print(f"{result['database']}: {result['requests']} POST redirects at {args.rate:g}/s -> "
          f"{result['throughput_per_s']}/s; latency p50 {result['latency_ms']['p50']} ms, "
          f"p99 {result['latency_ms']['p99']} ms (service p50 {result['service_ms']['p50']} ms, "
          f"p99 {result['service_ms']['p99']} ms); statuses {result['statuses']}")
    print(json.dumps(result))
    if set(result["statuses"]) != {303} or not result["every_link_opened_once"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
