"""Event→send latency below saturation: booked-appointment notifications at a steady, open-loop rate.

    python bench/latency.py                                   # 50 events/s for 60 s, fresh SQLite
    python bench/latency.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python bench/latency.py --find-max                        # steps 25, 50, 75, 100, 150, … of 20 s each
    python bench/latency.py --find-max --steps 50,100,200 --step-seconds 10

Goal reported against: p99 < 500 ms at 50 events/s.

The stack of bench/pipeline_throughput.py: the sandbox EHR (sekmet-fhir), the WhatsApp emulator with
its status webhooks on (sent, delivered, read for every message) and ``bridge serve``, each its own
process, configured only through BRIDGE_* variables (consent_source=assume, the service's default
tick of 1 s unless --tick). As in its burst mode, the EHR's subscriptions are turned off and the
patients and booked appointments are created first (not timed); then notifications are PUT at the
intake on a fixed schedule, event i at t0 + i / rate, whether or not earlier ones were answered
(open loop: a slow service meets the same arrivals, so queueing shows in the latency, as in
production). Each recipient gets one event per step (the pair limit, 6 s, never holds a send).

Latency of an event = the emulator's ``accepted_at`` of the message to that patient's (unique,
fictional) number minus the time its PUT was sent (one machine, one clock). The first --warmup
seconds of each step are sent but left out of the percentiles (connection and cache warm-up).
Printed per step: p50/p90/p99/max, the rate the driver achieved (PUTs / their span) and how late it
was against its schedule (if it lags, the figures are not open-loop: the machine is too busy), the
send rate, the service's CPU per event, the 1-minute load average, and whether every event was sent
exactly once with no dead letter.

``--find-max`` sets whatsapp_messages_per_second to 1000 (Meta's highest tier; the default 80 would
be the limit otherwise), runs the steps on one stack, waiting between steps until the service is
idle, and reports the highest rate whose p99 stays under --max-p99 (1 s); it stops at the first step
that misses it or leaves events unsent. When even the first step misses (a busy machine), it halves
that rate, down to --min-rate, so a figure is still found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import httpx

from adapter.settings import DEMO_SECRET
from bench.harness import percentile
from bench.machine_info import machine
from bench.pipeline_throughput import (
    FHIR_JSON,
    MAX_N,
    Stack,
    _get_json,
    _interrupt,
    _wait,
    cpu_seconds,
    create_appointments,
    create_patients,
    digits,
    fictional_numbers,
    prepare_database,
    subscriptions_off,
)
from ehr.hook_secrets import authorization_header, derive_secret

GOAL_RATE, GOAL_P99_MS = 50, 500
DEFAULT_STEPS = "25,50,75,100,150,200,300,400"


class Pool:
    """Patients created so far (reused across steps: one event per patient per step)."""

    def __init__(self, stack: Stack, concurrency: int) -> None:
        self.stack, self.concurrency = stack, concurrency
        self.refs: list[str] = []
        self.who: dict[str, str] = {}  # patient ref → recipient digits

    async def take(self, count: int) -> list[str]:
        if count > len(self.refs):
            numbers = fictional_numbers(count)[len(self.refs):]
            refs = await create_patients(self.stack, numbers, self.concurrency)
            self.who.update({ref: digits(number) for ref, number in zip(refs, numbers, strict=True)})
            self.refs += refs
        return self.refs[:count]


async def drive(stack: Stack, appointments: list[dict[str, Any]], who: dict[str, str], rate: float,
                connections: int) -> dict[str, Any]:
    """PUTs the notifications on schedule (open loop); returns event times, schedule lag and acks."""
    token = derive_secret(DEMO_SECRET.encode(), "appointment")
    headers = {"Authorization": authorization_header(token), "Content-Type": FHIR_JSON}
    bodies = [(who[a["participant"][0]["actor"]["reference"]], a["id"], json.dumps(a).encode()) for a in appointments]
    event_at: dict[str, float] = {}
    lag: list[float] = []
    acks: list[float] = []
    failures: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base_url=stack.service_url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def put(recipient: str, resource_id: str, body: bytes) -> None:
            sent = time.perf_counter()
            event_at[recipient] = time.time()
            try:
                async with session.put(f"/ehr/notify/appointment/Appointment/{resource_id}", data=body,
                                       headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1
                return
            acks.append(time.perf_counter() - sent)
            if status != 200:
                failures[f"HTTP {status}"] = failures.get(f"HTTP {status}", 0) + 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.2
        for i, (recipient, resource_id, body) in enumerate(bodies):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append(time.perf_counter() - due)
            tasks.append(asyncio.create_task(put(recipient, resource_id, body)))
        await asyncio.gather(*tasks)
    return {"event_at": event_at, "lag": sorted(lag), "acks": sorted(acks), "failures": failures}


def idle(stack: Stack) -> bool:
    """The service has nothing in hand (inbox drained, no send in flight) and the emulator has no
    status webhook left to post."""
    health = _get_json(f"{stack.service_url}/health") or {}
    emulator = _get_json(f"{stack.emulator_url}/_emulator/health") or {}
    return (bool(health) and not health.get("inbox", {}).get("pending") and not health.get("outbox", {}).get("sending")
            and emulator.get("pending_webhook_tasks") == 0)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def run_step(stack: Stack, pool: Pool, rate: float, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    count = max(1, round(rate * seconds))
    refs = asyncio.run(pool.take(count))
    appointments = asyncio.run(create_appointments(stack, refs, args.ehr_concurrency))
    _wait(lambda: idle(stack), 120, "the service to be idle before the step", stack.ensure_alive, every=0.5)
    dead_before = int(((_get_json(f"{stack.service_url}/health") or {}).get("outbox") or {}).get("dead", 0))
    # Forget the previous step's messages (the emulator keeps 50 000 records; matching is per step).
    httpx.delete(f"{stack.emulator_url}/_emulator/messages", timeout=10).raise_for_status()
    assert stack.service is not None
    cpu_before, load_before = cpu_seconds(stack.service.pid), os.getloadavg()[0]
    driven = asyncio.run(drive(stack, appointments, pool.who, rate, args.connections))
    stack.ensure_alive()

    def accepted() -> bool:
        return int((_get_json(f"{stack.emulator_url}/_emulator/health") or {}).get("accepted", 0)) >= count

    timed_out = False
    try:
        _wait(accepted, args.timeout, f"{count} messages at the emulator", stack.ensure_alive, every=0.25)
    except TimeoutError:
        timed_out = True
    cpu = cpu_seconds(stack.service.pid) - cpu_before
    messages = (_get_json(f"{stack.emulator_url}/_emulator/messages") or {}).get("messages", [])
    sent_at: dict[str, list[float]] = {}
    for message in messages:
        if message.get("type") == "template":
            sent_at.setdefault(digits(str(message.get("wa_id") or "")), []).append(float(message["accepted_at"]))
    event_at: dict[str, float] = driven["event_at"]
    first_event = min(event_at.values())
    measured = sorted(min(sent_at[w]) - at for w, at in event_at.items() if w in sent_at
                      and at - first_event >= args.warmup)
    sends = sorted(min(times) for w, times in sent_at.items() if w in event_at)
    with contextlib.suppress(TimeoutError):  # not settled: the dead-letter count below may be short
        _wait(lambda: idle(stack), 60, "the service to settle", stack.ensure_alive, every=0.5)
    health = _get_json(f"{stack.service_url}/health") or {}
    dead = int((health.get("outbox") or {}).get("dead", 0)) - dead_before
    put_times = sorted(event_at.values())
    put_span = max(put_times[-1] - put_times[0], 1e-9)
    return {
        "rate": rate, "seconds": seconds, "events": count, "put": len(event_at), "sent": len(sends),
        "duplicate_sends": sum(len(t) - 1 for t in sent_at.values()), "dead_letters": dead, "timed_out": timed_out,
        "all_sent": len(sends) == count and len(event_at) == count and not dead and not driven["failures"],
        "measured": len(measured), "warmup_s": args.warmup,
        "p50_ms": ms(statistics.median(measured)) if measured else None,
        "p90_ms": ms(percentile(measured, 90)) if measured else None,
        "p99_ms": ms(percentile(measured, 99)) if measured else None,
        "max_ms": ms(measured[-1]) if measured else None,
        "achieved_put_rate": round((len(put_times) - 1) / put_span, 1),
        "driver_lag_p99_ms": ms(percentile(driven["lag"], 99)), "driver_lag_max_ms": ms(driven["lag"][-1]),
        "intake_ack_p50_ms": ms(statistics.median(driven["acks"])) if driven["acks"] else None,
        "intake_ack_p99_ms": ms(percentile(driven["acks"], 99)) if driven["acks"] else None,
        "intake_failures": driven["failures"],
        "send_rate": round((len(sends) - 1) / max(sends[-1] - sends[0], 1e-9), 1) if len(sends) > 1 else None,
        "service_cpu_ms_per_event": round(1000 * cpu / count, 2),
        "loadavg_1m_start_end": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def print_step(r: dict[str, Any]) -> None:
    print(f"  {r['rate']:>6g}/s x {r['seconds']:g} s: p50 {r['p50_ms']} p90 {r['p90_ms']} p99 {r['p99_ms']} "
          f"max {r['max_ms']} ms | PUT rate {r['achieved_put_rate']}/s (lag p99 {r['driver_lag_p99_ms']} ms), "
          f"sends {r['send_rate']}/s | svc CPU {r['service_cpu_ms_per_event']} ms/ev | "
          f"load {r['loadavg_1m_start_end']} | sent {r['sent']}/{r['events']}, dup {r['duplicate_sends']}, "
          f"dead {r['dead_letters']}, all sent {r['all_sent']}", flush=True)


def passed(result: dict[str, Any], max_p99_ms: float) -> bool:
    return bool(result["all_sent"]) and result["p99_ms"] is not None and result["p99_ms"] < max_p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help=f"events per second (default {GOAL_RATE})")
    parser.add_argument("--seconds", type=float, default=60, help="how long to send (default 60)")
    parser.add_argument("--warmup", type=float, default=5, help="first seconds left out of the percentiles (5)")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file in a temp dir; a postgresql+psycopg:// URL names the "
                             "server: a fresh database is created and dropped afterwards")
    parser.add_argument("--find-max", action="store_true", help="step the rate up; report the highest with p99 < 1 s")
    parser.add_argument("--steps", default=DEFAULT_STEPS, help=f"--find-max rates (default {DEFAULT_STEPS})")
    parser.add_argument("--step-seconds", type=float, default=20, help="--find-max: seconds per step (default 20)")
    parser.add_argument("--max-p99", type=float, default=1000, help="--find-max: p99 limit in ms (default 1000)")
    parser.add_argument("--min-rate", type=float, default=5,
                        help="--find-max: when the first step misses, halve it down to this rate (default 5)")
    parser.add_argument("--messages-per-second", type=int, default=None,
                        help="whatsapp_messages_per_second (default: the service's, 80; --find-max: 1000)")
    parser.add_argument("--tick", type=float, default=1.0, help="BRIDGE_TICK_SECONDS (default 1.0, the service's)")
    parser.add_argument("--connections", type=int, default=256, help="driver's connections to the intake (256)")
    parser.add_argument("--ehr-concurrency", type=int, default=16, help="concurrent EHR writes in set-up (16)")
    parser.add_argument("--timeout", type=float, default=120, help="longest wait for a step's sends after its PUTs")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, SQLite file)")
    args = parser.parse_args()
    rates = [float(r) for r in args.steps.split(",")] if args.find_max else [args.rate]
    seconds = args.step_seconds if args.find_max else args.seconds
    if max(rates) * seconds > MAX_N or min(rates) <= 0 or args.warmup >= seconds:
        parser.error(f"need 0 < rate, rate x seconds <= {MAX_N} and --warmup < the step's seconds")
    signal.signal(signal.SIGTERM, _interrupt)
    per_second = args.messages_per_second or (1000 if args.find_max else None)
    print(json.dumps({"machine": machine(), "rates": rates, "seconds": seconds, "tick_seconds": args.tick,
                      "whatsapp_messages_per_second": per_second or "default (80)"}), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    database = prepare_database(args.database_url, workdir, "latency")
    stack = Stack(workdir, database)
    if per_second:
        stack.service_env["BRIDGE_WHATSAPP_MESSAGES_PER_SECOND"] = str(per_second)
    results: list[dict[str, Any]] = []
    try:
        stack.start(args.tick, status_webhooks=True)
        subscriptions_off(stack)
        pool = Pool(stack, args.ehr_concurrency)
        print(f"\n== event→send latency, open loop ({'postgresql' if database.admin_url else 'sqlite'})")
        queue = list(rates)
        while queue:
            rate = queue.pop(0)
            result = run_step(stack, pool, rate, seconds, args)
            results.append(result)
            print_step(result)
            print(json.dumps(result), flush=True)
            if args.find_max and not passed(result, args.max_p99):
                # Even the first step is saturated (a busy machine): halve it, so a rate is still found.
                if not any(passed(r, args.max_p99) for r in results) and rate / 2 >= args.min_rate:
                    queue = [rate / 2]
                    continue
                break
        log = stack.log_summary()
    except BaseException:
        print(f"failed; logs kept in {workdir}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        stack.stop()
        database.drop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"  service log warnings: {log or 'none'}")
    if args.find_max:
        good = [r["rate"] for r in results if passed(r, args.max_p99)]
        print(f"  highest rate with p99 < {args.max_p99:g} ms and all sent: {max(good) if good else 'none'} events/s")
    for r in results:
        if r["rate"] == GOAL_RATE:
            met = r["all_sent"] and (r["p99_ms"] or 0) < GOAL_P99_MS
            print(f"  goal p99 < {GOAL_P99_MS} ms at {GOAL_RATE} events/s: p99 {r['p99_ms']} ms, "
                  f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
