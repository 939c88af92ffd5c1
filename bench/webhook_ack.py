"""WhatsApp webhook receiver: acknowledgement time under load, and dedupe under concurrency.

    python bench/webhook_ack.py                                   # N=3000, C=32, temp SQLite file
    python bench/webhook_ack.py --database postgresql             # fresh database on 127.0.0.1:5432
    python bench/webhook_ack.py --requests 10000 --concurrency 64

The real service app (``adapter.app.create_app`` with ``load_settings(mode="demo", ...)``, lifespan
on, so migrations run and the pipeline applies statuses in the background, as in production) is
served by uvicorn on a loopback port in a thread of this process. C concurrent aiohttp clients
(one keep-alive connection each) then POST N webhook bodies to ``/whatsapp/webhook``:

- 70 % status webhooks carrying 1-3 statuses, each for a new message id;
- 20 % inbound text messages from synthetic senders (1201555xxxx);
- 10 % exact duplicates (same bytes, same signature) of earlier bodies, sent whenever their turn
  comes, so some race their original.

Bodies are serialised as Meta does (``whatsapp.emulator.webhooks.meta_json``: ``\\/`` and ``\\uXXXX``)
and signed with ``whatsapp.signature.sign`` under the app secret of the settings. All bodies are
built before the clock starts. Ack latency = from just before the POST until its response body was
read. Afterwards the rows of ``wa_status`` and ``wa_inbound`` are counted with a separate engine:
each must equal the distinct items sent, i.e. the duplicates had no second effect.

Only ``create_app``, ``load_settings``, the route and the two table names are relied on.
Caveats: the clients share this process (and its GIL) with the server, so the figures include
client overhead, and peak RSS (getrusage) is that of the whole process: server plus clients.
A PostgreSQL database named ``bench_webhook_ack_<pid>_<random>`` is created and dropped afterwards
(``--pg-url`` names the server and a maintenance database; trust auth by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from sqlalchemy import create_engine, text

from adapter.app import create_app
from adapter.settings import load_settings
from bench.harness import fresh_database, percentile, serve
from bench.machine_info import machine
from whatsapp.emulator.webhooks import meta_json
from whatsapp.signature import HEADER, sign

ROUTE = "/whatsapp/webhook"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REQUEST_TIMEOUT_SECONDS = 60.0
WARMUP_BODIES = 20  # untimed, before the run: first-request imports and pool warm-up stay out of the figures
PHONE_NUMBER_ID = "100000000000001"
WABA_ID = "200000000000002"
KINDS = ("status", "inbound", "duplicate")
STATUSES = ("sent", "delivered", "read")
TEXTS = ("Yes, I'll be there", "Can I move it to 12/05?", "Gracias — nos vemos", "ok 👍", "STOP")


# --------------------------------------------------------------------------- bodies


@dataclass
class Body:
    kind: str  # "status", "inbound" or "duplicate"
    data: bytes
    signature: str


@dataclass
class Workload:
    warmup: list[Body] = field(default_factory=list)
    bodies: list[Body] = field(default_factory=list)
    status_items_posted: int = 0  # including those inside duplicates and warm-up
    inbound_items_posted: int = 0
    distinct_statuses: set[str] = field(default_factory=set)  # "<wamid>:<status>", the receiver's dedupe key
    distinct_inbound: set[str] = field(default_factory=set)


class BodyFactory:
    def __init__(self, secret: bytes, rng: random.Random) -> None:
        self.secret, self.rng = secret, rng
        self.tag = secrets.token_hex(4).upper()
        self.serial = 0

    def _wamid(self) -> str:
        self.serial += 1
        return f"wamid.HBgLBENCH{self.tag}{self.serial:09d}"

    def _sender(self) -> str:
        return f"1201555{self.rng.randrange(10_000):04d}"

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        metadata = {"display_phone_number": "15550100000", "phone_number_id": PHONE_NUMBER_ID}
        return {"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [
            {"value": {"messaging_product": "whatsapp", "metadata": metadata, **value}, "field": "messages"}]}]}

    def _body(self, kind: str, document: dict[str, Any]) -> Body:
        data = meta_json(document)
        return Body(kind, data, sign(data, self.secret))

    def status(self) -> tuple[Body, list[str]]:
        now = int(time.time())
        items, keys = [], []
        for _ in range(self.rng.randint(1, 3)):
            wamid, status, recipient = self._wamid(), self.rng.choice(STATUSES), self._sender()
            item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(now), "recipient_id": recipient}
            if status != "read":
                item["conversation"] = {"id": secrets.token_hex(16), "origin": {"type": "utility"}}
                item["pricing"] = {"billable": True, "pricing_model": "PMP", "type": "regular",
                                   "category": "utility"}
            items.append(item)
            keys.append(f"{wamid}:{status}")
        return self._body("status", self._envelope({"statuses": items})), keys

    def inbound(self) -> tuple[Body, str]:
        wamid, sender = self._wamid(), self._sender()
        value = {"contacts": [{"profile": {"name": "Bench Sender"}, "wa_id": sender}],
                 "messages": [{"from": sender, "id": wamid, "timestamp": str(int(time.time())), "type": "text",
                               "text": {"body": self.rng.choice(TEXTS)}}]}
        return self._body("inbound", self._envelope(value)), wamid


def build_workload(n: int, secret: bytes, seed: int) -> Workload:
    rng = random.Random(seed)
    factory = BodyFactory(secret, rng)
    work = Workload()
    counts: dict[int, tuple[int, int]] = {}  # id(body) -> (status items, inbound items) it carries

    def fresh(kind: str) -> Body:
        if kind == "status":
            body, keys = factory.status()
            work.distinct_statuses.update(keys)
            counts[id(body)] = (len(keys), 0)
        else:
            body, wamid = factory.inbound()
            work.distinct_inbound.add(wamid)
            counts[id(body)] = (0, 1)
        return body

    work.warmup = [fresh("status" if i % 4 else "inbound") for i in range(WARMUP_BODIES)]
    originals: list[Body] = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.10 and originals:
            original = rng.choice(originals)
            body = Body("duplicate", original.data, original.signature)
            counts[id(body)] = counts[id(original)]
        else:
            body = fresh("status" if draw < 0.10 or draw >= 0.30 else "inbound")
            originals.append(body)
        work.bodies.append(body)
    for body in (*work.warmup, *work.bodies):
        statuses, inbound = counts[id(body)]
        work.status_items_posted += statuses
        work.inbound_items_posted += inbound
    return work


# --------------------------------------------------------------------------- database





def stored_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                    for table in ("wa_status", "wa_inbound")}
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- server





# --------------------------------------------------------------------------- service log


class LogTally(logging.Handler):
    """Counts the service's WARNING+ records (by logger and level) instead of printing every traceback;
    keeps the first message of each, so a failing pipeline is reported in one line, not thousands."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name} {record.levelname}"
        self.counts[key] += 1
        self.errors += record.levelno >= logging.ERROR
        if key not in self.first:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                message += f": {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            self.first[key] = message[:300]


@contextmanager
def tally_logs() -> Iterator[LogTally]:
    root = logging.getLogger()
    tally = LogTally()
    root.addHandler(tally)
    try:
        yield tally
    finally:
        root.removeHandler(tally)


# --------------------------------------------------------------------------- load


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, of every answered request
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # the same, by kind of body
    statuses: Counter[str] = field(default_factory=Counter)  # HTTP status or exception name -> count
    seconds: float = 0.0


async def post_all(url: str, bodies: list[Body], concurrency: int) -> Outcome:
    outcome = Outcome()
    queue = iter(bodies)  # shared: each client takes the next body when it is free
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)

    async def client() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            for body in queue:
                headers = {"Content-Type": "application/json", HEADER: body.signature}
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body.data, headers=headers) as response:
                        await response.read()
                        status = str(response.status)
                except (TimeoutError, aiohttp.ClientError, OSError) as error:
                    outcome.statuses[type(error).__name__] += 1
                    continue
                elapsed = time.perf_counter() - started
                outcome.latencies.append(elapsed)
                outcome.by_kind.setdefault(body.kind, []).append(elapsed)
                outcome.statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    outcome.seconds = time.perf_counter() - started
    return outcome





def _summary(seconds: list[float]) -> dict[str, float | None]:
    ms = sorted(1000 * value for value in seconds)
    if not ms:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    return {"p50": round(percentile(ms, 50), 2), "p90": round(percentile(ms, 90), 2),
            "p99": round(percentile(ms, 99), 2), "max": round(ms[-1], 2)}


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in [key for key in os.environ if key.startswith("BRIDGE_")]:
        del os.environ[name]  # only what is set here configures the service
    with fresh_database(args.database, args.pg_url, "bench_webhook_ack") as (url, described):
        settings = load_settings(mode="demo", database_url=url, manage_subscriptions=False,
                                 whatsapp_sync_templates=False)  # no WABA here: the receiver alone
        secret = settings.whatsapp_app_secret.get_secret_value().encode()
        work = build_workload(args.requests, secret, args.seed)
        with tally_logs() as logs, serve(create_app(settings), lifespan="on") as root:
            warm = asyncio.run(post_all(root + ROUTE, work.warmup, min(args.concurrency, len(work.warmup))))
            if warm.statuses != Counter({"200": len(work.warmup)}):
                raise RuntimeError(f"warm-up requests were not all accepted: {dict(warm.statuses)}")
            load_start = os.getloadavg()[0]
            outcome = asyncio.run(post_all(root + ROUTE, work.bodies, args.concurrency))
            load_end = os.getloadavg()[0]
        stored = stored_counts(url)
    kinds = Counter(body.kind for body in work.bodies)
    return {
        "database": described, "requests": args.requests, "concurrency": args.concurrency,
        "mix": {kind: kinds.get(kind, 0) for kind in KINDS},
        "seconds": round(outcome.seconds, 3),
        "throughput_req_per_s": round(args.requests / outcome.seconds, 1),
        "ack_ms": _summary(outcome.latencies),
        "ack_ms_by_kind": {kind: _summary(outcome.by_kind.get(kind, [])) for kind in KINDS},
        "responses": dict(sorted(outcome.statuses.items())),
        "non_200": sum(count for status, count in outcome.statuses.items() if status != "200"),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_1m_start_end": [round(load_start, 2), round(load_end, 2)],
        "warmup_bodies": len(work.warmup),
        "wa_status": {"items_posted": work.status_items_posted, "distinct": len(work.distinct_statuses),
                      "stored": stored["wa_status"]},
        "wa_inbound": {"items_posted": work.inbound_items_posted, "distinct": len(work.distinct_inbound),
                       "stored": stored["wa_inbound"]},
        "service_log_records": dict(sorted(logs.counts.items())),
        "service_log_first": logs.first,
        "service_log_errors": logs.errors,
        "duplicates_had_no_effect": (stored["wa_status"] == len(work.distinct_statuses)
                                     and stored["wa_inbound"] == len(work.distinct_inbound)),
    }


def print_table(result: dict[str, Any]) -> None:
    ack = result["ack_ms"]
    rows = [("database", result["database"]), ("requests", result["requests"]),
            ("concurrency (aiohttp clients)", result["concurrency"]),
            ("mix status/inbound/duplicate", "/".join(str(v) for v in result["mix"].values())),
            ("wall time (s)", result["seconds"]), ("throughput (req/s)", result["throughput_req_per_s"]),
            ("ack p50 / p90 / p99 / max (ms)", f"{ack['p50']} / {ack['p90']} / {ack['p99']} / {ack['max']}"),
            *((f"  {kind} p50 / p90 / p99 / max (ms)", " / ".join(str(v) for v in summary.values()))
              for kind, summary in result["ack_ms_by_kind"].items()),
            ("non-200", result["non_200"]), ("responses", result["responses"]),
            ("peak RSS, server + clients (MiB)", result["peak_rss_mib"]),
            ("load avg 1m (start, end)", result["loadavg_1m_start_end"])]
    for table in ("wa_status", "wa_inbound"):
        counts = result[table]
        rows.append((f"{table} posted / distinct / stored",
                     f"{counts['items_posted']} / {counts['distinct']} / {counts['stored']}"))
    rows.append((f"duplicates had no effect (incl. {result['warmup_bodies']} warm-up)",
                 result["duplicates_had_no_effect"]))
    rows.append(("service log records >= WARNING", result["service_log_records"] or "none"))
    rows += [(f"  first {key}", message) for key, message in result["service_log_first"].items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # so the finally blocks stop the server and drop the database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--requests", "-n", type=int, default=3000, help="webhook POSTs (default 3000)")
    parser.add_argument("--concurrency", "-c", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help=f"PostgreSQL server and maintenance database (default {DEFAULT_PG_URL})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the body mix (default 1)")
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    signal.signal(signal.SIGTERM, _interrupt)
    print(json.dumps({"machine": machine()}))
    result = run(args)
    print_table(result)
    print(json.dumps(result))
    if result["non_200"] or not result["duplicates_had_no_effect"] or result["service_log_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
