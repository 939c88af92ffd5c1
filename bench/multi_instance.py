"""Several instances on one PostgreSQL: events/s with 1 and with 3 instances, and SIGKILL rounds that
count lost and duplicated messages and time the takeover of the killed instance's claims.

    python bench/multi_instance.py                          # N=2000, 1 then 3 instances, fresh database
    python bench/multi_instance.py --kill --runs 5          # 3 instances, 5 rounds of 2,000, one SIGKILLed each
    python bench/multi_instance.py --kill --runs 5 --load   # the same with a busy loop per CPU core
    python bench/multi_instance.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

One sandbox EHR (sekmet-fhir), one WhatsApp emulator and K ``bridge serve`` processes (configured only
through BRIDGE_* variables, default lease and heartbeat settings, ``instance_count=K``,
consent_source=assume, EHR subscriptions not managed) share one fresh PostgreSQL database, migrated
once before they start. N synthetic patients and booked appointments are created in the EHR (not
timed); then N notifications are PUT at the instances' intake endpoints round-robin, as an EHR behind
a load balancer would, moving on to the next instance when one does not answer and retrying while
none does (an EHR's rest-hook retries). ``--kill`` SIGKILLs one instance (never the one receiving
status webhooks) after a third of the notifications of each round and starts it again under the same
name ``--restart-after`` seconds later.

The emulator retries a status webhook that got no answer for about a minute (Meta retries for days),
so a status lost to the kill arrives once the instance is back. Ground truth: the emulator's record of
accepted messages, one per patient's unique fictional number: ``lost`` and ``duplicates`` are counted
there. ``recover_s`` = from the kill until every outbox row and EHR event the killed boot held was
finished or claimed by a live instance (polled from the kill on). Reuses the stack of
:mod:`bench.pipeline_throughput` and the
fresh database of :mod:`bench.harness`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.settings import DEMO_SECRET
from adapter.storage.db import make_engine, upgrade
from bench.harness import fresh_database
from bench.machine_info import machine
from bench.multi_faults import Kill, cpu_load, kill_now
from bench.multi_outcome import outcome
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
# The emulator with a webhook retry that outlasts a restart (Meta: "decreasing frequency", up to 7 days).
_EMULATOR = """
import sys
from adapter.settings import DEMO_SECRET, load_settings
from whatsapp.emulator.config import EmulatorConfig, WebhookRetryPolicy
from whatsapp.emulator.server import run_emulator
settings = load_settings(mode="demo")
run_emulator(EmulatorConfig(
    access_token=DEMO_SECRET, app_secret=DEMO_SECRET, webhook_url=sys.argv[2], public_base_url=sys.argv[3],
    phone_numbers={settings.whatsapp_phone_number_id: "+1 555 0100"}, waba_id=settings.whatsapp_waba_id,
    webhook_retry=WebhookRetryPolicy(max_attempts=40, initial_backoff_seconds=0.5, multiplier=1.5,
                                     max_backoff_seconds=2.0)), host="127.0.0.1", port=int(sys.argv[1]))
"""


@dataclass
class Cluster(Stack):
    """The bench stack with K service instances instead of one (``service`` stays the first)."""

    instances: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    peak_rss: dict[int, float] = field(default_factory=dict)

    def start_cluster(self, count: int, *, tick_seconds: float | None = None, lease_seconds: float | None = None,
                      settings: dict[str, str] | None = None) -> Cluster:
        """K instances with default settings, but for ``tick_seconds``, ``lease_seconds`` (both leases; the
        send timeout half of it) and any extra ``BRIDGE_*`` ``settings``."""
        engine = make_engine(self.database.url)
        upgrade(engine)  # once, before the instances: they would otherwise race to create the schema
        engine.dispose()
        self.ehr = SandboxEhr(self.workdir / "ehr").start()
        ports = [free_port() for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]
        self.service_url, emulator_port = self.urls[0], free_port()
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        # Statuses go to the first instance (never the one killed in a cluster of several): they settle
        # sends whose answer a killed instance did not live to record.
        self.emulator = self._spawn([sys.executable, "-c", _EMULATOR, str(emulator_port),
                                     f"{self.urls[0]}/whatsapp/webhook", self.urls[0]], _clean_env(), "emulator.log")
        _wait(lambda: _get_json(f"{self.emulator_url}/_emulator/health"), STARTUP_TIMEOUT, "the emulator",
              self.ensure_alive)
        for index, port in enumerate(ports):
            env = {**_clean_env(), "BRIDGE_MODE": "demo", "BRIDGE_FHIR_BASE_URL": self.ehr.base_url,
                   "BRIDGE_PUBLIC_BASE_URL": self.urls[index], "BRIDGE_PORTAL_BASE_URL": f"{self.urls[0]}/portal-demo",
                   "BRIDGE_HTTP_PORT": str(port), "BRIDGE_DATABASE_URL": self.database.url,
                   "BRIDGE_WHATSAPP_API_BASE_URL": self.emulator_url, "BRIDGE_CONSENT_SOURCE": "assume",
                   "BRIDGE_MANAGE_SUBSCRIPTIONS": "false", "BRIDGE_INSTANCE_COUNT": str(count),
                   "BRIDGE_LOG_LEVEL": "WARNING", **(settings or {})}
            if tick_seconds is not None:
                env["BRIDGE_TICK_SECONDS"] = str(tick_seconds)
            if lease_seconds is not None:
                env.update({"BRIDGE_INBOX_LEASE_SECONDS": str(lease_seconds),
                            "BRIDGE_SEND_LEASE_SECONDS": str(lease_seconds),
                            "BRIDGE_WHATSAPP_TIMEOUT_SECONDS": str(lease_seconds / 2)})
            self.envs.append(env)
            self.instances.append(self._spawn([*_bridge_command(), "serve"], env, f"service-{index}.log"))
        self.service = self.instances[0]
        for index in range(count):
            self.wait_up(index)
        return self

    def wait_up(self, index: int) -> None:
        _wait(lambda: _get_json(f"{self.urls[index]}/health"), STARTUP_TIMEOUT, f"instance {index}", self.ensure_alive)

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

    def restart(self, index: int) -> None:
        """The killed instance starts again: same port, so the same instance name, a new boot."""
        self.instances[index] = self._spawn([*_bridge_command(), "serve"], self.envs[index], f"service-{index}.log")
        self.killed.discard(index)

    def instance_name(self, index: int) -> str:
        """The name the instance gets by default (adapter.ops.liveness.default_name)."""
        return f"{socket.gethostname()}:{self.urls[index].rsplit(':', 1)[1]}"[:120]

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


async def notify(cluster: Cluster, events: Events, *, concurrency: int = 24, kill: Kill | None = None,
                 give_up_after: float = 120.0) -> dict[str, float]:
    """PUTs each appointment at an instance's intake, round-robin, failing over to the next instance
    when one does not answer and retrying while none does; returns recipient digits → event time."""
    token = derive_secret(DEMO_SECRET.encode(), "appointment")
    headers = {"Authorization": authorization_header(token), "Content-Type": FHIR_JSON}
    turn, done, event_at = itertools.count(), [0], {}
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def put(appointment: dict[str, Any]) -> None:
            body = json.dumps(appointment).encode()
            url_path = f"/ehr/notify/appointment/Appointment/{appointment['id']}"
            deadline = time.monotonic() + give_up_after
            async with slots:
                event_at.setdefault(events.number_of[appointment["id"]], time.time())
                while True:
                    index = next(turn) % len(cluster.urls)
                    if index not in cluster.killed:
                        try:
                            response = await client.put(cluster.urls[index] + url_path, content=body, headers=headers)
                            if response.status_code == 200:
                                break
                        except httpx.TransportError:
                            pass  # that instance is gone: the EHR's retry reaches another one, or this one later
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no instance accepted the notification of Appointment/{appointment['id']}")
                    await asyncio.sleep(0.05 if len(cluster.killed) < len(cluster.urls) else 0.5)
                done[0] += 1
                if kill is not None and done[0] == kill.after:
                    await asyncio.to_thread(kill_now, cluster, kill)

        await asyncio.gather(*(put(appointment) for appointment in events.appointments))
    return event_at

def split(events: Events, size: int) -> list[Events]:
    """Booked events in rounds of ``size`` (booking is not what is measured: done before any load)."""
    return [Events(events.appointments[start:start + size], events.number_of)
            for start in range(0, len(events.appointments), size)]


def round_of(cluster: Cluster, events: Events, kill: Kill | None, timeout: float) -> dict[str, Any]:
    """One round: booked events notified (one instance SIGKILLed mid-run if ``kill``); the emulator's count."""
    event_at = asyncio.run(notify(cluster, events, kill=kill))
    result = outcome(cluster, event_at, timeout)
    if kill is not None and kill.watcher is not None:
        kill.watcher.join(timeout=180)
    if kill is not None and kill.restart_after is not None:
        cluster.wait_up(kill.index)
    return {**result, "killed": kill is not None, "held_at_kill": {t: len(ids) for t, ids in kill.held.items()}
            if kill else None, "recover_s": kill.recover_s if kill else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--instances", type=int, nargs="+", default=None, help="default: 1 3 (3 with --kill)")
    parser.add_argument("--kill", action="store_true", help="SIGKILL one instance a third into each round")
    parser.add_argument("--runs", type=int, default=1, help="rounds on one cluster (each N events)")
    parser.add_argument("--restart-after", type=float, default=6.0)
    parser.add_argument("--load", action="store_true", help="a busy loop per CPU core during the rounds")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server (a fresh database is made)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}, indent=1), flush=True)
    for count in args.instances or ([3] if args.kill else [1, 3]):
        with tempfile.TemporaryDirectory(prefix="bench-multi-") as folder, \
                fresh_database("postgresql", args.database_url, "bench_multi") as (url, described):
            cluster = Cluster(Path(folder), Database(url))
            try:
                cluster.start_cluster(count, tick_seconds=0.2)
                rounds = split(asyncio.run(book(cluster, fictional_numbers(args.n * args.runs))), args.n)
                with cpu_load() if args.load else nullcontext():
                    for run, events in enumerate(rounds):
                        kill = Kill(args.n // 3, 1 + run % 2 if count > 1 else 0, args.restart_after) \
                            if args.kill else None
                        result = round_of(cluster, events, kill, args.timeout)
                        print(json.dumps({"database": described, "instances": count, "run": run + 1,
                                          "load": args.load, **result}), flush=True)
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
