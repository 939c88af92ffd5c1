"""End-to-end pipeline throughput: EHR → intake → inbox → decide → outbox → dispatch → WhatsApp.

    python bench/pipeline_throughput.py                            # N=1000, both modes, fresh SQLite
    python bench/pipeline_throughput.py -n 2000 --mode burst
    python bench/pipeline_throughput.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/pipeline_throughput.py --profile /tmp/prof       # + py-spy on the service (pip install py-spy)

Three processes on loopback, all started and stopped here: the sandbox EHR (sekmet-fhir, via
SandboxEhr), the WhatsApp emulator (`bridge emulator`) and the service (`bridge serve`, configured
only through BRIDGE_* variables, consent_source=assume). Each mode gets a fresh stack and database.

``ehr``:   N synthetic patients are created first (not timed), then N booked appointments,
           concurrently; the EHR notifies the service through its real rest-hook subscription.
           Event time = the appointment's ``meta.lastUpdated`` (the EHR's commit time, ms).
``burst``: the EHR's subscriptions are turned off, N appointments are created, then N
           notifications are PUT at the intake concurrently; event time = when each PUT was sent.
           This measures the service without the EHR's 4-thread notification pool in the way.

Send time = the emulator's ``accepted_at`` for the message to that patient's (unique, fictional)
number. events/s = N / (last send - first event). Peak RSS = VmHWM from /proc/<pid>/status.
A PostgreSQL URL names the server and a maintenance database: a fresh database is created for
each mode and dropped afterwards. Every wait is bounded (--timeout); the script stops by itself.

Notes from its first runs, before the FHIR-client and SQLite fixes (README has the latest figures).
Notes (N=1000, 2 vCPUs shared by the EHR, emulator, service, this driver and other jobs, so
figures vary by ±30 % from run to run; the 1-min load average is printed with each result):
- SQLite: ehr ~25 events/s, burst ~44-51 events/s; PostgreSQL: ehr ~25, burst ~28. p50/p99
  are mostly queueing (N events arrive faster than they are sent). Service peak RSS ~147 MiB.
- The service is CPU-bound at ~20 ms of CPU per event (SQLite; ~30 ms on PostgreSQL) in one
  process (GIL): ~20 % FHIR reads through httpx's own transport, ~20 % three status webhooks
  per message, ~20 % Decider.record (ORM), ~13 % uvicorn connection handling. In `ehr` mode the
  EHR itself burns as much CPU again (sekmet opens a new HTTP client per notification).
- Profile with --profile-gil for a CPU view; py-spy runs --nonblocking (the default, which stops
  the process for each sample, slowed the service several times over).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import phonenumbers

from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.settings import DEMO_SECRET
from bench.machine_info import machine
from ehr.hook_secrets import authorization_header, derive_secret
from ehr.patient import mobile_number
from tests.support.synthetic import synthetic_appointment, synthetic_patient

FHIR_JSON = "application/fhir+json"
STARTUP_TIMEOUT = 60.0
MAX_N = 20_000  # below the emulator's 50 000 kept records and the fictional numbers available


# --------------------------------------------------------------------------- machine, memory


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a live process has used so far."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int | None) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- fictional numbers


def fictional_numbers(n: int) -> list[str]:
    """``+1 AAA-555-01xx``: the 555-0100..0199 block reserved for fiction, across every US area
    code phonenumbers accepts; each must also be taken by ``ehr.patient.mobile_number``."""
    found: list[str] = []
    for area in range(200, 1000):
        probe = phonenumbers.parse(f"+1 {area} 555 0150", "US")
        if not (phonenumbers.is_valid_number(probe) and phonenumbers.region_code_for_number(probe) == "US"):
            continue
        for line in range(100, 200):
            number = f"+1 {area}-555-0{line}"
            contact = mobile_number({"telecom": [{"system": "phone", "value": number, "use": "mobile"}]}, "US")
            if contact.e164 is None:
                continue
            found.append(number)
            if len(found) == n:
                return found
    raise SystemExit(f"only {len(found)} fictional numbers available; use -n <= {len(found)}")


def digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


# --------------------------------------------------------------------------- database


@dataclass
class Database:
    url: str
    admin_url: str | None = None  # PostgreSQL: where to drop it from
    name: str | None = None

    def drop(self) -> None:
        if self.admin_url and self.name:
            _pg_exec(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _pg_exec(admin_url: str, statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def prepare_database(url: str | None, workdir: Path, mode: str) -> Database:
    if not url:
        return Database(f"sqlite:///{workdir / 'bridge.db'}")
    if url.startswith("sqlite"):
        return Database(url)
    if not url.startswith("postgresql"):
        raise SystemExit("--database-url must be sqlite:///... or postgresql+psycopg://...")
    from sqlalchemy.engine import make_url

    admin = make_url(url)
    name = f"bench_pipeline_{os.getpid()}_{mode}"
    admin_url = admin.render_as_string(hide_password=False)
    _pg_exec(admin_url, f'CREATE DATABASE "{name}"')
    return Database(admin.set(database=name).render_as_string(hide_password=False), admin_url, name)


# --------------------------------------------------------------------------- the stack


def _bridge_command() -> list[str]:
    script = Path(sys.executable).parent / "bridge"
    if script.exists():
        return [str(script)]
    # Same interpreter either way, so the child's pid is the service's Python process.
    return [sys.executable, "-c", "from adapter.cli.main import main; main()"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}


@dataclass
class Stack:
    workdir: Path
    database: Database
    ehr: SandboxEhr | None = None
    emulator: subprocess.Popen[bytes] | None = None
    service: subprocess.Popen[bytes] | None = None
    service_url: str = ""
    emulator_url: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cpu_at_start: dict[str, float] = field(default_factory=dict)
    load_at_start: float = 0.0
    service_env: dict[str, str] = field(default_factory=dict)  # more BRIDGE_* settings (bench/latency.py)

    def pids(self) -> dict[str, int | None]:
        ehr = self.ehr._process if self.ehr else None
        return {"service": self.service.pid if self.service else None,
                "emulator": self.emulator.pid if self.emulator else None,
                "ehr": ehr.pid if ehr else None}

    def mark_start(self) -> None:
        """The measured window opens: remember CPU used so far and the machine's load."""
        self.cpu_at_start = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        self.load_at_start = os.getloadavg()[0]

    def start(self, tick_seconds: float, status_webhooks: bool = True) -> Stack:
        self.ehr = SandboxEhr(self.workdir / "ehr").start()
        service_port, emulator_port = free_port(), free_port()
        self.service_url = f"http://127.0.0.1:{service_port}"
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        webhook = ["--webhook-url", f"{self.service_url}/whatsapp/webhook"] if status_webhooks else []
        self.emulator = self._spawn(
            [*_bridge_command(), "emulator", "--port", str(emulator_port), *webhook,
             "--public-base-url", self.service_url], _clean_env(), "emulator.log")
        _wait(lambda: _get_json(f"{self.emulator_url}/_emulator/health"), STARTUP_TIMEOUT, "the emulator",
              self.ensure_alive)
        self.service = self.spawn_service(service_port, tick_seconds)

        def subscribed() -> bool:
            health = _get_json(f"{self.service_url}/health")
            subs = (health or {}).get("subscriptions") or []
            return bool(subs) and all(s["status"] == "active" for s in subs)

        _wait(subscribed, STARTUP_TIMEOUT, "the service and its EHR subscriptions", self.ensure_alive)
        return self

    def spawn_service(self, service_port: int, tick_seconds: float) -> subprocess.Popen[bytes]:
        """``bridge serve``, configured only through BRIDGE_* variables (bench/pipeline_side_by_side.py
        puts the bare anchor pipeline here instead)."""
        assert self.ehr is not None
        env = {**_clean_env(),
               "BRIDGE_MODE": "demo",
               "BRIDGE_FHIR_BASE_URL": self.ehr.base_url,
               "BRIDGE_PUBLIC_BASE_URL": self.service_url,
               "BRIDGE_PORTAL_BASE_URL": f"{self.service_url}/portal-demo",
               "BRIDGE_HTTP_PORT": str(service_port),
               "BRIDGE_DATABASE_URL": self.database.url,
               "BRIDGE_WHATSAPP_API_BASE_URL": self.emulator_url,
               "BRIDGE_CONSENT_SOURCE": "assume",
               "BRIDGE_TICK_SECONDS": str(tick_seconds),
               "BRIDGE_LOG_LEVEL": "WARNING", **self.service_env}
        return self._spawn([*_bridge_command(), "serve"], env, "service.log")

    def ensure_alive(self) -> None:
        """Raises, with the log's tail, when one of our processes is gone (crashed or killed)."""
        ehr = self.ehr._process if self.ehr else None
        for name, process, log in (("the service", self.service, self.workdir / "service.log"),
                                   ("the emulator", self.emulator, self.workdir / "emulator.log"),
                                   ("the EHR", ehr, self.workdir / "ehr" / "sekmet.log")):
            if process is not None and process.poll() is not None:
                how = f"was killed by signal {-process.returncode}" if process.returncode < 0 else \
                    f"exited with {process.returncode}"
                raise RuntimeError(f"{name} {how} during the run (not by this script):\n{_tail(log)}")

    def log_summary(self) -> dict[str, int]:
        """The service's WARNING/ERROR lines, counted by message with numbers blanked out: a run
        with EHR retries or failed sends is not a clean measurement."""
        counts: collections.Counter[str] = collections.Counter()
        path = self.workdir / "service.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if " WARNING " in line or " ERROR " in line:
                message = line.split(" ", 2)[-1]
                counts[re.sub(r"\d+", "#", message)[:120]] += 1
        return dict(counts.most_common(8))

    def _spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log_name).open("ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=self.workdir)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()
        if self.ehr is not None:
            self.ehr.stop()


_poller: httpx.Client | None = None


def _get_json(url: str) -> Any:
    """GET through one kept-alive client (a fresh httpx client per poll costs CPU we measure)."""
    global _poller
    _poller = _poller or httpx.Client(timeout=10)
    try:
        response = _poller.get(url)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def _tail(path: Path, limit: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-limit:] if path.exists() else ""


def _wait(check: Callable[[], Any], timeout: float, what: str, alive: Callable[[], None] | None = None,
          every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------- EHR writes


async def _bounded(concurrency: int, jobs: list[Any]) -> list[Any]:
    slots = asyncio.Semaphore(concurrency)

    async def run(job: Any) -> Any:
        async with slots:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


def _ehr_client(stack: Stack, concurrency: int) -> httpx.AsyncClient:
    assert stack.ehr is not None
    return httpx.AsyncClient(base_url=stack.ehr.base_url, timeout=60, headers={"Content-Type": FHIR_JSON},
                             limits=httpx.Limits(max_connections=concurrency))


async def create_patients(stack: Stack, numbers: list[str], concurrency: int) -> list[str]:
    async with _ehr_client(stack, concurrency) as client:
        def job(number: str) -> Any:
            patient = synthetic_patient()
            patient["telecom"] = [{"system": "phone", "value": number, "use": "mobile"}]
            return lambda: _create(client, patient)

        created = await _bounded(concurrency, [job(number) for number in numbers])
    return [f"Patient/{p['id']}" for p in created]


async def create_appointments(stack: Stack, patient_refs: list[str], concurrency: int) -> list[dict[str, Any]]:
    async with _ehr_client(stack, concurrency) as client:
        return await _bounded(concurrency, [
            (lambda ref=ref: _create(client, synthetic_appointment(ref, location_ref="Location/bench-site")))
            for ref in patient_refs])


def subscriptions_off(stack: Stack) -> int:
    assert stack.ehr is not None
    with httpx.Client(base_url=stack.ehr.base_url, timeout=10, headers={"Content-Type": FHIR_JSON}) as client:
        bundle = client.get("/Subscription", params={"status": "active"}).json()
        subs = [entry["resource"] for entry in bundle.get("entry", [])]
        for sub in subs:
            client.put(f"/Subscription/{sub['id']}", json=dict(sub, status="off")).raise_for_status()
        still = client.get("/Subscription", params={"status": "active"}).json().get("entry", [])
    if still:
        raise RuntimeError("the EHR's subscriptions did not turn off")
    return len(subs)


def _instant_epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- the modes


@dataclass
class Run:
    mode: str
    n: int
    event_at: dict[str, float]  # recipient digits → event time (epoch s)
    extra: dict[str, Any] = field(default_factory=dict)


async def run_ehr(stack: Stack, numbers: list[str], concurrency: int, profiler: Profiler) -> Run:
    started = time.perf_counter()
    refs = await create_patients(stack, numbers, concurrency)
    patients_s = time.perf_counter() - started
    by_patient = {ref: digits(number) for ref, number in zip(refs, numbers, strict=True)}
    profiler.start()
    stack.mark_start()
    started = time.perf_counter()
    appointments = await create_appointments(stack, refs, concurrency)
    creating_s = time.perf_counter() - started
    event_at = {by_patient[a["participant"][0]["actor"]["reference"]]: _instant_epoch(a["meta"]["lastUpdated"])
                for a in appointments}
    return Run("ehr", len(numbers), event_at, {
        "patients_created_per_s": round(len(numbers) / patients_s),
        "appointments_created_per_s": round(len(numbers) / creating_s),
        "ehr_concurrency": concurrency})


async def run_burst(stack: Stack, numbers: list[str], concurrency: int, burst_concurrency: int,
                    profiler: Profiler) -> Run:
    turned_off = subscriptions_off(stack)
    refs = await create_patients(stack, numbers, concurrency)
    appointments = await create_appointments(stack, refs, concurrency)
    by_patient = {ref: digits(number) for ref, number in zip(refs, numbers, strict=True)}
    token = derive_secret(DEMO_SECRET.encode(), "appointment")
    headers = {"Authorization": authorization_header(token), "Content-Type": FHIR_JSON}
    event_at: dict[str, float] = {}
    acks: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    limits = httpx.Limits(max_connections=burst_concurrency, max_keepalive_connections=burst_concurrency)
    async with httpx.AsyncClient(base_url=stack.service_url, timeout=60, limits=limits) as client:
        await asyncio.sleep(0.5)  # nothing in flight: the EHR may still be finishing its writes

        def job(appointment: dict[str, Any]) -> Any:
            async def put() -> None:
                body = json.dumps(appointment).encode()
                who = by_patient[appointment["participant"][0]["actor"]["reference"]]
                event_at[who] = time.time()
                sent = time.perf_counter()
                try:
                    response = await client.put(f"/ehr/notify/appointment/Appointment/{appointment['id']}",
                                                content=body, headers=headers)
                except httpx.TransportError as error:
                    failures[type(error).__name__] += 1
                    return
                acks.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    failures[f"HTTP {response.status_code}"] += 1
            return put

        profiler.start()
        stack.mark_start()
        started = time.perf_counter()
        await _bounded(burst_concurrency, [job(a) for a in appointments])
        posting_s = time.perf_counter() - started
    stack.ensure_alive()
    if not acks:
        raise RuntimeError(f"no notification was accepted: {dict(failures)}")
    acks.sort()
    return Run("burst", len(numbers), event_at, {
        "subscriptions_turned_off": turned_off, "burst_concurrency": burst_concurrency,
        "intake_accepted_per_s": round(len(numbers) / posting_s),
        "intake_ack_p50_ms": round(statistics.median(acks) * 1000, 1),
        "intake_ack_p99_ms": round(_pct(acks, 0.99) * 1000, 1),
        "intake_non_200": dict(failures)})


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * q) - 1))]


def collect(stack: Stack, run: Run, timeout: float) -> dict[str, Any]:
    """Waits until the emulator accepted N template messages (bounded), then measures."""
    def accepted() -> bool:
        health = _get_json(f"{stack.emulator_url}/_emulator/health") or {}
        return int(health.get("accepted", 0)) >= run.n

    timed_out = False
    try:
        _wait(accepted, timeout, f"{run.n} messages at the emulator", stack.ensure_alive, every=0.25)
    except TimeoutError:
        timed_out = True
    cpu = {name: round(cpu_seconds(pid) - stack.cpu_at_start.get(name, 0.0), 2)
           for name, pid in stack.pids().items()}
    load_at_end = os.getloadavg()[0]
    messages = (_get_json(f"{stack.emulator_url}/_emulator/messages") or {}).get("messages", [])
    sent_at: dict[str, float] = {}
    for message in messages:
        if message.get("type") != "template":
            continue
        who = digits(str((message.get("payload") or {}).get("to") or message.get("wa_id") or ""))
        sent_at[who] = min(sent_at.get(who, float("inf")), float(message["accepted_at"]))
    latencies = sorted(sent_at[who] - at for who, at in run.event_at.items() if who in sent_at)
    first_event = min(run.event_at.values())
    last_send = max((sent_at[who] for who in run.event_at if who in sent_at), default=first_event)
    span = max(last_send - first_event, 1e-9)
    duplicates = len([m for m in messages if m.get("type") == "template"]) - len(sent_at)
    result: dict[str, Any] = {
        "mode": run.mode, "events": run.n, "sent": len(latencies), "duplicate_sends": duplicates,
        "timed_out": timed_out, "seconds": round(span, 3),
        "events_per_s": round(len(latencies) / span, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(_pct(latencies, 0.99) * 1000, 1) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "cpu_seconds": cpu, "service_cpu_ms_per_event": round(1000 * cpu["service"] / max(1, len(latencies)), 2),
        "loadavg_1m_start_end": [round(stack.load_at_start, 2), round(load_at_end, 2)],
        **run.extra,
    }
    # Let the status webhooks and the last outbox updates land, then read the service's own counts.
    def settled() -> dict[str, Any] | None:
        health = _get_json(f"{stack.service_url}/health") or {}
        outbox = health.get("outbox", {})
        return health if not outbox.get("queued") and not outbox.get("sending") else None

    try:
        health = _wait(settled, 20, "the outbox to settle", stack.ensure_alive, every=0.25)
    except TimeoutError:
        health = _get_json(f"{stack.service_url}/health") or {}
    result["outbox"] = health.get("outbox", {})
    result["inbox"] = health.get("inbox", {})
    result["dead_letters"] = int(health.get("outbox", {}).get("dead", 0))
    result["all_sent"] = (result["outbox"].get("sent", 0) == run.n and not result["dead_letters"]
                          and len(latencies) == run.n)
    return result


# --------------------------------------------------------------------------- profiling (optional)


class Profiler:
    """``py-spy record`` on the service from the first event until the last send (optional).

    ``--nonblocking``: by default py-spy stops the process for every sample, which with the
    service's ~50 threads cut its throughput several times over in our runs."""

    def __init__(self, out_dir: Path | None, pid: int | None, mode: str, rate: int = 100, gil: bool = False) -> None:
        self.out = out_dir / f"service-{mode}{'-gil' if gil else ''}.txt" if out_dir else None
        self.pid, self.rate, self.gil = pid, rate, gil
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.out is None or self.pid is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(self.pid), "-o", str(self.out),
             "--format", "raw", "--nolineno", "--rate", str(self.rate), "--nonblocking",
             *(["--gil"] if self.gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def summary(self, top: int = 14) -> list[str]:
        if self.out is None or not self.out.exists():
            return []
        stacks: list[tuple[list[str], int]] = []
        for line in self.out.read_text(errors="replace").splitlines():
            joined, _, samples = line.rpartition(" ")
            if joined and samples.isdigit():
                stacks.append((joined.split(";"), int(samples)))
        idle = sum(count for frames, count in stacks if _idle(frames))
        stacks = [(frames, count) for frames, count in stacks if not _idle(frames)]
        total = sum(count for _, count in stacks) or 1
        leaf_by_area: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        waits: collections.Counter[str] = collections.Counter()
        for frames, count in stacks:
            leaf_by_area[_area(frames)] += count
            ours = [f for f in frames if _ours(f)]
            for name in set(ours):
                inclusive[name] += count
            driver = [f.split(" (")[0] for f in frames if "Dialect" in f and ".do_" in f]
            if driver:  # in the DB driver: running SQL, waiting for a lock, a reply, a ping or a commit
                waits[f"{ours[-1].split(' (')[0] if ours else '?'} → {driver[-1].split('.')[-1]}"] += count
        lines = [f"py-spy: {total} busy samples, {idle} idle-thread samples left out ({self.out})",
                 "  leaf frames by library (where threads are, running or blocked):"]
        lines += [f"    {100 * c / total:5.1f}%  {area}" for area, c in leaf_by_area.most_common(top)]
        lines.append("  inclusive, project functions:")
        lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(top)]
        lines.append("  inside the database driver, by calling project function → driver call:")
        lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in waits.most_common(8)]
        return lines


_AREAS = (("sqlalchemy", "sqlalchemy"), ("sqlmodel", "sqlalchemy"), ("sqlite3", "sqlite3 (C)"),
          ("psycopg", "psycopg"), ("httpcore", "httpx/httpcore"), ("httpx", "httpx/httpcore"),
          ("aiohttp", "aiohttp"), ("h11", "h11"), ("uvicorn", "uvicorn"), ("starlette", "starlette/fastapi"),
          ("fastapi", "starlette/fastapi"), ("pydantic", "pydantic"), ("cryptography", "cryptography"),
          ("phonenumbers", "phonenumbers"), ("json", "json"), ("alembic", "alembic"),
          ("(adapter/", "bridge: adapter"), ("(ehr/", "bridge: ehr"), ("(whatsapp/", "bridge: whatsapp"),
          ("(mappings/", "bridge: mappings"), ("(portal_links/", "bridge: portal_links"),
          ("asyncio", "asyncio"), ("concurrent/futures", "threads"), ("threading", "threads"),
          ("selectors", "asyncio"), ("logging", "logging"))


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):  # leaf first: the library that is actually running
        for needle, area in _AREAS:
            if needle in frame:
                return area
    return "other: " + frames[-1][:60]


_OURS = ("(adapter/", "(ehr/", "(whatsapp/", "(mappings/", "(portal_links/")
_IDLE = ("Condition.wait (threading", "Queue.get (queue", "_worker (concurrent", "select (selectors",
         "Event.wait (threading")


def _ours(frame: str) -> bool:
    return any(part in frame for part in _OURS)


def _idle(frames: list[str]) -> bool:
    """Worker threads parked on their queues and the loop in select(): waiting for work. A wait
    under a project function (e.g. for a pooled database connection) is not idle."""
    return any(part in frames[-1] for part in _IDLE) and not any(_ours(frame) for frame in frames[1:])


# --------------------------------------------------------------------------- main


def print_table(result: dict[str, Any]) -> None:
    rows = [("events", result["events"]), ("sent (template messages)", result["sent"]),
            ("events/s end to end", result["events_per_s"]), ("wall time (s)", result["seconds"]),
            ("event→send p50 (ms)", result["p50_ms"]), ("event→send p99 (ms)", result["p99_ms"]),
            ("event→send max (ms)", result["max_ms"])]
    rows += [(key.replace("_", " "), result[key]) for key in (
        "appointments_created_per_s", "patients_created_per_s", "intake_accepted_per_s", "intake_ack_p50_ms",
        "intake_ack_p99_ms", "intake_non_200") if key in result]
    rows += [("CPU s in window (svc/emu/ehr)", "/".join(str(result["cpu_seconds"][k])
                                                      for k in ("service", "emulator", "ehr"))),
             ("service CPU ms per event", result["service_cpu_ms_per_event"]),
             ("load avg 1m (start, end)", result["loadavg_1m_start_end"]),
             ("service peak RSS (MiB)", result["service_peak_rss_mb"]),
             ("emulator peak RSS (MiB)", result["emulator_peak_rss_mb"]),
             ("EHR peak RSS (MiB)", result["ehr_peak_rss_mb"]),
             ("outbox (service /health)", result["outbox"]), ("inbox (service /health)", result["inbox"]),
             ("dead letters", result["dead_letters"]), ("duplicate sends", result["duplicate_sends"]),
             ("service log warnings", result["service_log_warnings"] or "none"),
             ("all sent", result["all_sent"] and not result["timed_out"])]
    width = max(len(name) for name, _ in rows)
    print(f"\n== mode {result['mode']}  (database: {result['database']})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def run_mode(mode: str, args: argparse.Namespace, numbers: list[str],
             make_stack: Callable[[Path, Database], Stack] = Stack, label: str = "") -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{mode}-"))
    database = prepare_database(args.database_url, workdir, f"{mode}{label}")
    stack = make_stack(workdir, database)
    profiler: Profiler | None = None
    try:
        stack.start(args.tick, status_webhooks=not args.no_status_webhooks)
        assert stack.service is not None and stack.emulator is not None
        profiler = Profiler(args.profile, stack.service.pid, mode, gil=args.profile_gil)
        if mode == "ehr":
            run = asyncio.run(run_ehr(stack, numbers, args.ehr_concurrency, profiler))
        else:
            run = asyncio.run(run_burst(stack, numbers, args.ehr_concurrency, args.burst_concurrency, profiler))
        result = collect(stack, run, args.timeout)
        profiler.stop()
        result["database"] = "postgresql" if database.admin_url else "sqlite"
        for name, pid in stack.pids().items():
            result[f"{name}_peak_rss_mb"] = peak_rss_mb(pid)
        result["status_webhooks"] = not args.no_status_webhooks
        result["service_log_warnings"] = stack.log_summary()
        if args.keep:
            result["workdir"] = str(workdir)
        return result
    except BaseException:
        print(f"failed; logs kept in {workdir}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if profiler is not None:
            profiler.stop()
        stack.stop()
        database.drop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        if profiler is not None:
            for line in profiler.summary():
                print(line)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # so the finally blocks stop every process we started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="booked appointments (default 1000)")
    parser.add_argument("--mode", choices=["ehr", "burst", "both"], default="both")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file in a temp dir; a postgresql+psycopg:// URL gets a "
                             "fresh database per mode, dropped afterwards")
    parser.add_argument("--ehr-concurrency", type=int, default=16, help="concurrent EHR writes (default 16)")
    parser.add_argument("--burst-concurrency", type=int, default=64,
                        help="concurrent notifications in burst mode (default 64)")
    parser.add_argument("--tick", type=float, default=0.05, help="BRIDGE_TICK_SECONDS (default 0.05)")
    parser.add_argument("--timeout", type=float, default=600, help="longest wait for the sends, per mode (s)")
    parser.add_argument("--no-status-webhooks", action="store_true",
                        help="diagnosis: the emulator sends no status webhooks back to the service")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, SQLite file)")
    parser.add_argument("--profile", type=Path, default=None, help="folder for py-spy profiles of the service")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: sample only the thread holding the GIL (a CPU view)")
    args = parser.parse_args()
    if not 1 <= args.n <= MAX_N:
        parser.error(f"-n must be between 1 and {MAX_N}")
    # SIGTERM → KeyboardInterrupt, so the finally blocks stop every process we started.
    signal.signal(signal.SIGTERM, _interrupt)
    numbers = fictional_numbers(args.n)
    print(json.dumps({"machine": machine(), "n": args.n}))
    for mode in (["ehr", "burst"] if args.mode == "both" else [args.mode]):
        result = run_mode(mode, args, numbers)
        print_table(result)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
