"""Webhook intake side by side: the service against a bare HMAC endpoint and pywa, in one run.

    python bench/webhook_side_by_side.py                        # 3 rounds of 2000 requests, C=32
    python bench/webhook_side_by_side.py --rounds 5 -n 5000 --targets service-postgresql,pywa
    python bench/webhook_side_by_side.py --anchors /path/to/bench-anchors

Targets, each a uvicorn subprocess on loopback started once and kept for every round:

- ``service-sqlite`` / ``service-postgresql``: ``bridge serve`` with production settings
  (``BRIDGE_MODE=production``: fresh random secrets and keys, a signing key file for the audit
  checkpoints, consent from the registry, tick 1 s, WARNING log), a fresh database each
  (temp SQLite file; a new PostgreSQL database, dropped after), EHR subscriptions and template
  sync off (there is no EHR or WABA here: the receiver alone);
- ``bare``: ``webhook_bare.py`` from the anchors (raw ASGI, HMAC, json.loads, 200; no storage);
- ``pywa``: ``webhook_pywa.py`` (pywa 4.5 on FastAPI, signature check on, one status handler;
  ``pip install pywa==4.5.0`` or ``pip install -e '.[bench]'``; left out with a note if missing).

The load generator is bench/webhook_ack.py's: C aiohttp clients, one keep-alive connection each,
taking the next body when free. Every body is a unique signed ``delivered`` status for a new
message id (the service stores each; a repeat would be deduplicated and store nothing), addressed
to the target's phone number id, serialised as Meta does and built before the clock starts.
Rounds interleave the targets, rotating the order each round. CPU per request = the target
process's user+system CPU from the first request to 1 s after the last response (so the
service's background apply of the statuses it stored is mostly counted), divided by N. The
load generator shares the 2 cores with the target, equally for every target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import fresh_database, percentile
from bench.machine_info import machine
from bench.pipeline_throughput import _bridge_command, _clean_env
from bench.side_by_side import DEFAULT_ANCHORS, Server, anchors_dir, cpu_seconds, print_rounds
from bench.webhook_ack import DEFAULT_PG_URL, ROUTE, Body, _interrupt, post_all, stored_counts
from whatsapp.emulator.webhooks import meta_json
from whatsapp.signature import sign

ANCHOR_SECRET = b"app-secret-123"  # what webhook_bare.py and webhook_pywa.py verify with


def pywa_phone_id(anchors: Path) -> str:
    """The phone number id the pywa anchor serves, read from the anchor itself: pywa hands an
    update to its handler only for its own number, and the anchor owns that value."""
    found = re.search(r'phone_id="([^"]+)"', (anchors / "webhook_pywa.py").read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit(f"{anchors / 'webhook_pywa.py'}: no phone_id=\"...\" found")
    return found.group(1)
SERVICE_PHONE_ID = "100000000000001"
DRAIN_SECONDS = 1.0
WARMUP = 50
ALL_TARGETS = ("service-sqlite", "service-postgresql", "pywa", "bare")


def status_bodies(n: int, secret: bytes, phone_number_id: str) -> list[Body]:
    """N unique signed ``delivered`` statuses, one per body, as Meta sends them."""
    tag, now = secrets.token_hex(5).upper(), str(int(time.time()))
    bodies = []
    for serial in range(n):
        status = {"id": f"wamid.HBgLSBS{tag}{serial:09d}", "status": "delivered", "timestamp": now,
                  "recipient_id": f"1201555{serial % 10_000:04d}",
                  "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}}
        value = {"messaging_product": "whatsapp", "statuses": [status],
                 "metadata": {"display_phone_number": "15550100000", "phone_number_id": phone_number_id}}
        document = {"object": "whatsapp_business_account",
                    "entry": [{"id": "200000000000002", "changes": [{"value": value, "field": "messages"}]}]}
        data = meta_json(document)
        bodies.append(Body("status", data, sign(data, secret)))
    return bodies


def _free_port() -> int:
    from adapter.demo.sandbox_ehr import free_port

    return free_port()


def service_server(name: str, database_url: str, workdir: Path) -> tuple[Server, bytes]:
    """``bridge serve`` in production mode; returns it and its app secret."""
    key_file = workdir / f"{name}-audit-signing.pem"
    subprocess.run([*_bridge_command(), "audit", "keygen", "--out", str(key_file)], check=True,
                   env=_clean_env(), stdout=subprocess.DEVNULL)
    port, secret = _free_port(), secrets.token_urlsafe(32)

    def key() -> str:
        return secrets.token_urlsafe(32)

    env = {**_clean_env(), "BRIDGE_MODE": "production", "BRIDGE_DATABASE_URL": database_url,
           "BRIDGE_HTTP_PORT": str(port), "BRIDGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "BRIDGE_WHATSAPP_ACCESS_TOKEN": key(), "BRIDGE_WHATSAPP_APP_SECRET": secret,
           "BRIDGE_WHATSAPP_VERIFY_TOKEN": key(), "BRIDGE_EHR_HOOK_SECRET": key(),
           "BRIDGE_DATA_ENCRYPTION_KEY": key(), "BRIDGE_BLIND_INDEX_KEY": key(), "BRIDGE_LINK_SIGNING_KEY": key(),
           "BRIDGE_CONSENT_SOURCE": "registry", "BRIDGE_AUDIT_SIGNING_KEY_FILE": str(key_file),
           "BRIDGE_MANAGE_SUBSCRIPTIONS": "false", "BRIDGE_WHATSAPP_SYNC_TEMPLATES": "false",
           "BRIDGE_WHATSAPP_PHONE_NUMBER_ID": SERVICE_PHONE_ID, "BRIDGE_LOG_LEVEL": "WARNING"}
    server = Server(name, [*_bridge_command(), "serve"], f"http://127.0.0.1:{port}", "/health", env, workdir,
                    workdir / f"{name}.log")
    return server, secret.encode()


def anchor_server(name: str, module: str, anchors: Path, workdir: Path) -> Server:
    port = _free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "75"]
    return Server(name, argv, f"http://127.0.0.1:{port}", "/", _clean_env(), anchors, workdir / f"{name}.log")


def measure(server: Server, bodies: list[Body], concurrency: int) -> dict[str, Any]:
    server.alive()
    cpu_before = cpu_seconds(server.pid)
    route = "/" if server.name == "pywa" else ROUTE  # pywa's default webhook_endpoint
    outcome = asyncio.run(post_all(server.url + route, bodies, concurrency))
    time.sleep(DRAIN_SECONDS)
    cpu = cpu_seconds(server.pid) - cpu_before
    server.alive()
    ms = sorted(1000 * value for value in outcome.latencies)
    n = len(bodies)
    return {"req_s": round(n / outcome.seconds, 1), "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "cpu_ms_per_req": round(1000 * cpu / n, 3),
            "non_200": sum(count for status, count in outcome.statuses.items() if status != "200")}


def run(args: argparse.Namespace) -> list[dict[str, dict[str, Any]]]:
    anchors = anchors_dir(args.anchors)
    anchor_phone = pywa_phone_id(anchors)
    targets = [t for t in args.targets.split(",") if t]
    if "pywa" in targets and importlib.util.find_spec("pywa") is None:
        print("pywa is not installed (pip install pywa==4.5.0): the pywa target is left out", file=sys.stderr)
        targets.remove("pywa")
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-sbs-"))
    servers: dict[str, tuple[Server, bytes, str]] = {}
    databases: dict[str, str] = {}
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        with contextlib.ExitStack() as stack:
            for target in targets:
                if target.startswith("service-"):
                    kind = target.removeprefix("service-")
                    url, _ = stack.enter_context(fresh_database(kind, args.pg_url, "bench_webhook_sbs"))
                    server, secret = service_server(target, url, workdir)
                    databases[target] = url
                    servers[target] = (server, secret, SERVICE_PHONE_ID)
                else:
                    module = {"bare": "webhook_bare", "pywa": "webhook_pywa"}[target]
                    servers[target] = (anchor_server(target, module, anchors, workdir), ANCHOR_SECRET, anchor_phone)
                stack.callback(servers[target][0].stop)
                servers[target][0].start()
            for server, secret, phone in servers.values():  # first-request imports and pools stay out
                warm = measure(server, status_bodies(WARMUP, secret, phone), min(args.concurrency, WARMUP))
                if warm["non_200"]:
                    raise RuntimeError(f"{server.name}: warm-up requests were refused:\n{server.tail()}")
            for number in range(args.rounds):
                order = targets[number % len(targets):] + targets[: number % len(targets)]
                results: dict[str, dict[str, Any]] = {}
                for target in order:
                    server, secret, phone = servers[target]
                    results[target] = measure(server, status_bodies(args.requests, secret, phone), args.concurrency)
                rounds.append(results)
                print(json.dumps({"round": number + 1, **results}), flush=True)
            for target, url in databases.items():  # every 200 stored one row: the service did the job
                stored, posted = stored_counts(url)["wa_status"], WARMUP + args.rounds * args.requests
                if stored != posted:
                    raise RuntimeError(f"{target}: {stored} statuses stored of {posted} acknowledged")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", "-n", type=int, default=2000, help="requests per target per round")
    parser.add_argument("--concurrency", "-c", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"comma-separated, of {ALL_TARGETS}")
    parser.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS, help=f"default {DEFAULT_ANCHORS}")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help=f"PostgreSQL server (default {DEFAULT_PG_URL})")
    args = parser.parse_args()
    if unknown := set(args.targets.split(",")) - set(ALL_TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _interrupt)
    print(json.dumps({"machine": machine(), "loadavg_1m": os.getloadavg()[0]}))
    rounds = run(args)
    print(f"\n== webhook intake, {args.requests} unique signed statuses per target per round, "
          f"{args.concurrency} clients, {len(rounds)} rounds")
    services = [name for name in rounds[0] if name.startswith("service-")] if rounds else []
    pairs = [(metric, service, anchor) for service in services for anchor in ("pywa", "bare")
             for metric in ("req_s", "cpu_ms_per_req")]
    print_rounds(rounds, [("req_s", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                          ("cpu_ms_per_req", "CPU ms/req"), ("non_200", "non-200")], pairs)
    if any(result["non_200"] for r in rounds for result in r.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
