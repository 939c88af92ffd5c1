"""Several instances on one PostgreSQL: events/s with 1 and with 3 instances, and a SIGKILL mid-run.

    python bench/multi_instance.py                     # N=2000, 1 then 3 instances, fresh PostgreSQL database
    python bench/multi_instance.py -n 500 --instances 1 3 --kill
    python bench/multi_instance.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

One sandbox EHR (sekmet-fhir), one WhatsApp emulator and K ``bridge serve`` processes (configured only
through BRIDGE_* variables, ``instance_count=K``, consent_source=assume, EHR subscriptions not managed)
share one fresh PostgreSQL database, migrated once before they start. N synthetic patients and booked
appointments are created in the EHR (not timed); then N notifications are PUT at the instances' intake
endpoints round-robin, as an EHR behind a load balancer would, moving on to the next instance when one
does not answer. ``--kill`` SIGKILLs one instance (not the one receiving status webhooks) after a third
of the notifications: its leased work returns to the others when the leases (a few seconds here) expire.

Event time = when the PUT was sent; send time = the emulator's ``accepted_at`` for that patient's unique
fictional number. events/s = N / (last send - first event). Zero duplicates and zero losses are checked
on the emulator's record of accepted messages. Peak RSS = the largest VmHWM among the instances. Reuses
the stack pieces of :mod:`bench.pipeline_throughput` and the percentiles and fresh database of
:mod:`bench.harness`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.settings import DEMO_SECRET
from adapter.storage.db import make_engine, upgrade
from bench.harness import fresh_database, percentile
from bench.machine_info import machine
from bench.pipeline_throughput import (
    FHIR_JSON,
    STARTUP_TIMEOUT,
    Database,
    Stack,
    _bridge_command,
    _clean_env,
    _get_json,
    _tail,
    _wait,
    create_appointments,
    create_patients,
    digits,
    fictional_numbers,
    peak_rss_mb,
)
from ehr.hook_secrets import authorization_header, derive_secret

DEFAULT_PG = os.environ.get("BRIDGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@dataclass
class Cluster(Stack):
    """The bench stack with K service instances instead of one (``service`` stays the first)."""

    instances: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    peak_rss: dict[int, float] = field(default_factory=dict)

    def start_cluster(self, count: int, *, tick_seconds: float = 0.2, lease_seconds: float = 10.0) -> Cluster:
        engine = make_engine(self.database.url)
        upgrade(engine)  # once, before the instances: they would otherwise race to create the schema
        engine.dispose()
        self.ehr = SandboxEhr(self.workdir / "ehr").start()
        ports = [free_port() for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]
        self.service_url, emulator_port = self.urls[0], free_port()
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        # Statuses go to the first instance (never the one killed): they settle sends whose answer a
        # killed instance did not live to record.
        self.emulator = self._spawn(
            [*_bridge_command(), "emulator", "--port", str(emulator_port), "--webhook-url",
             f"{self.urls[0]}/whatsapp/webhook", "--public-base-url", self.urls[0]], _clean_env(), "emulator.log")
        _wait(lambda: _get_json(f"{self.emulator_url}/_emulator/health"), STARTUP_TIMEOUT, "the emulator",
              self.ensure_alive)
        for index, port in enumerate(ports):
            env = {**_clean_env(), "BRIDGE_MODE": "demo", "BRIDGE_FHIR_BASE_URL": self.ehr.base_url,
                   "BRIDGE_PUBLIC_BASE_URL": self.urls[index], "BRIDGE_PORTAL_BASE_URL": f"{self.urls[0]}/portal-demo",
                   "BRIDGE_HTTP_PORT": str(port), "BRIDGE_DATABASE_URL": self.database.url,
                   "BRIDGE_WHATSAPP_API_BASE_URL": self.emulator_url, "BRIDGE_CONSENT_SOURCE": "assume",
                   "BRIDGE_MANAGE_SUBSCRIPTIONS": "false", "BRIDGE_TICK_SECONDS": str(tick_seconds),
                   "BRIDGE_INSTANCE_COUNT": str(count), "BRIDGE_INBOX_LEASE_SECONDS": str(lease_seconds),
                   "BRIDGE_SEND_LEASE_SECONDS": str(lease_seconds),
                   "BRIDGE_WHATSAPP_TIMEOUT_SECONDS": str(lease_seconds / 2), "BRIDGE_LOG_LEVEL": "WARNING"}
            self.instances.append(self._spawn([*_bridge_command(), "serve"], env, f"service-{index}.log"))
        self.service = self.instances[0]
        for url in self.urls:
            _wait(lambda url=url: _get_json(f"{url}/health"), STARTUP_TIMEOUT, f"the instance at {url}",
                  self.ensure_alive)
        return self

    def ensure_alive(self) -> None:
        for index, process in enumerate(self.instances):
            if index not in self.killed and process.poll() is not None:
                raise RuntimeError(f"instance {index} exited with {process.returncode} during the run:\n"
                                   f"{_tail(self.workdir / f'service-{index}.log')}")
        if self.emulator is not None and self.emulator.poll() is not None:
            raise RuntimeError(f"the emulator exited:\n{_tail(self.workdir / 'emulator.log')}")

    def kill(self, index: int) -> None:
        """SIGKILL: no shutdown, no lease released, no leader lock given back."""
        self.sample_rss()
        self.killed.add(index)
        os.kill(self.instances[index].pid, signal.SIGKILL)
        self.instances[index].wait(timeout=10)

    def sample_rss(self) -> None:
        for index, process in enumerate(self.instances):
            if index not in self.killed:
                rss = peak_rss_mb(process.pid)
                if rss is not None:
                    self.peak_rss[index] = max(rss, self.peak_rss.get(index, 0.0))


@dataclass
class Events:
    """N booked appointments in the EHR, keyed by their patient's number (digits)."""

    appointments: list[dict[str, Any]]
    number_of: dict[str, str]  # appointment id → recipient digits


async def book(cluster: Cluster, numbers: list[str], concurrency: int = 16) -> Events:
    refs = await create_patients(cluster, numbers, concurrency)
    by_patient = {ref: digits(number) for ref, number in zip(refs, numbers, strict=True)}
    appointments = await create_appointments(cluster, refs, concurrency)
    return Events(appointments, {a["id"]: by_patient[a["participant"][0]["actor"]["reference"]]
                                 for a in appointments})


async def notify(cluster: Cluster, events: Events, *, concurrency: int = 24,
                 kill_after: int | None = None, kill_index: int = 1) -> dict[str, float]:
    """PUTs each appointment at an instance's intake, round-robin, failing over to the next instance
    when one does not answer; returns recipient digits → event time (epoch seconds)."""
    token = derive_secret(DEMO_SECRET.encode(), "appointment")
    headers = {"Authorization": authorization_header(token), "Content-Type": FHIR_JSON}
    turn, done, event_at = itertools.count(), [0], {}
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def put(appointment: dict[str, Any]) -> None:
            body = json.dumps(appointment).encode()
            async with slots:
                for _attempt in range(len(cluster.urls) * 3):
                    index = next(turn) % len(cluster.urls)
                    if index in cluster.killed:
                        continue
                    event_at.setdefault(events.number_of[appointment["id"]], time.time())
                    try:
                        response = await client.put(
                            f"{cluster.urls[index]}/ehr/notify/appointment/Appointment/{appointment['id']}",
                            content=body, headers=headers)
                    except httpx.TransportError:
                        continue  # that instance is gone: the EHR's retry reaches another one
                    if response.status_code == 200:
                        break
                else:
                    raise RuntimeError(f"no instance accepted the notification of Appointment/{appointment['id']}")
                done[0] += 1
                if kill_after is not None and done[0] == kill_after:
                    cluster.kill(kill_index)

        await asyncio.gather(*(put(appointment) for appointment in events.appointments))
    return event_at


def outcome(cluster: Cluster, event_at: dict[str, float], timeout: float) -> dict[str, Any]:
    """Waits (bounded) until every event's patient got a message, then counts sends per patient."""
    wanted = set(event_at)

    def sends() -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for message in (_get_json(f"{cluster.emulator_url}/_emulator/messages?type=template") or {}).get(
                "messages", []):
            who = digits(str((message.get("payload") or {}).get("to") or message.get("wa_id") or ""))
            if who in wanted:
                found.setdefault(who, []).append(float(message["accepted_at"]))
        return found

    deadline = time.monotonic() + timeout
    found = sends()
    while len(found) < len(wanted) and time.monotonic() < deadline:
        cluster.ensure_alive()
        cluster.sample_rss()
        time.sleep(0.5)
        found = sends()
    time.sleep(1.0)  # a duplicate would come after the first send: look once more
    found, first = sends(), min(event_at.values())
    cluster.sample_rss()
    latencies = sorted(min(times) - event_at[who] for who, times in found.items())
    last = max((min(times) for times in found.values()), default=first)
    return {"events": len(wanted), "sent": len(found), "lost": len(wanted - set(found)),
            "duplicates": sum(len(times) - 1 for times in found.values()),
            "events_per_s": round(len(found) / max(last - first, 1e-9), 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            "peak_rss_mib": max(cluster.peak_rss.values(), default=None)}


def run(database: Database, workdir: Path, count: int, n: int, kill: bool, timeout: float) -> dict[str, Any]:
    cluster = Cluster(workdir, database)
    try:
        cluster.start_cluster(count)
        events = asyncio.run(book(cluster, fictional_numbers(n)))
        time.sleep(0.5)
        event_at = asyncio.run(notify(cluster, events, kill_after=n // 3 if kill and count > 1 else None))
        return {"instances": count, "killed_one": kill and count > 1, **outcome(cluster, event_at, timeout)}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--kill", action="store_true", help="SIGKILL one instance after a third of the events")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server (a fresh database is made)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}, indent=1), flush=True)
    for count in args.instances:
        with tempfile.TemporaryDirectory(prefix="bench-multi-") as folder, \
                fresh_database("postgresql", args.database_url, "bench_multi") as (url, described):
            result = run(Database(url), Path(folder), count, args.n, args.kill, args.timeout)
            print(json.dumps({"database": described, **result}), flush=True)


if __name__ == "__main__":
    main()
