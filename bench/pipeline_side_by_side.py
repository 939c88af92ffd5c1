"""Whole pipeline side by side: the service against ``pipeline_bare.py``, in one run.

    python bench/pipeline_side_by_side.py                         # N=1000, burst, 3 rounds, SQLite
    python bench/pipeline_side_by_side.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python bench/pipeline_side_by_side.py --mode ehr --rounds 5 --anchors /path/to/bench-anchors

Each round runs bench/pipeline_throughput.py's mode (``burst`` by default: notifications PUT
straight at the intake; ``ehr``: the EHR's own rest-hook delivery) twice on a fresh stack and
database each: once with the service (``bridge serve``, demo mode, every feature on) and once with
``pipeline_bare.py`` from the anchors in its place (same EHR, same emulator with its status
webhooks, same load driver, same event and send times). The order alternates from round to round.
Reported per run: events/s end to end, event→send p50/p99, service CPU per event (the target
process's user+system CPU over the window); then the ratios service/bare of events/s and of
CPU per event, as min / median / max over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine_info import machine
from bench.pipeline_throughput import MAX_N, Stack, _clean_env, _interrupt, fictional_numbers, run_mode
from bench.side_by_side import DEFAULT_ANCHORS, anchors_dir, print_rounds


class BareStack(Stack):
    """The stack with ``pipeline_bare.py`` where the service would be."""

    anchors: Path = DEFAULT_ANCHORS

    def spawn_service(self, service_port: int, tick_seconds: float) -> subprocess.Popen[bytes]:
        assert self.ehr is not None
        return self._spawn([sys.executable, str(self.anchors / "pipeline_bare.py"), "--port", str(service_port),
                            "--ehr", self.ehr.base_url, "--graph", self.emulator_url, "--db", self.database.url],
                           _clean_env(), "service.log")


def _row(result: dict[str, Any]) -> dict[str, Any]:
    return {"events_s": result["events_per_s"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "cpu_ms_per_event": result["service_cpu_ms_per_event"], "all_sent": result["all_sent"],
            "loadavg": result["loadavg_1m_start_end"][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="booked appointments per run (default 1000)")
    parser.add_argument("--mode", choices=["burst", "ehr"], default="burst")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--database-url", default=None,
                        help="default: fresh SQLite files; a postgresql+psycopg:// server URL gets a fresh database "
                             "per run, dropped afterwards")
    parser.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS, help=f"default {DEFAULT_ANCHORS}")
    parser.add_argument("--timeout", type=float, default=900, help="longest wait for the sends, per run (s)")
    args = parser.parse_args()
    if not 1 <= args.n <= MAX_N:
        parser.error(f"-n must be between 1 and {MAX_N}")
    BareStack.anchors = anchors_dir(args.anchors)
    # run_mode's options, as pipeline_throughput.py's defaults give them
    args.ehr_concurrency, args.burst_concurrency, args.tick = 16, 64, 0.05
    args.no_status_webhooks = args.keep = args.profile_gil = False
    args.profile = None
    signal.signal(signal.SIGTERM, _interrupt)
    numbers = fictional_numbers(args.n)
    print(json.dumps({"machine": machine(), "n": args.n, "mode": args.mode, "loadavg_1m": os.getloadavg()[0]}))
    targets: list[tuple[str, type[Stack]]] = [("service", Stack), ("bare", BareStack)]
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(args.rounds):
        results: dict[str, dict[str, Any]] = {}
        for name, make in (targets if number % 2 == 0 else targets[::-1]):
            result = run_mode(args.mode, args, numbers, make, label=f"_{name}")
            results[name] = _row(result)
            results[name]["warnings"] = result["service_log_warnings"]
        rounds.append(results)
        print(json.dumps({"round": number + 1, **results}), flush=True)
    print(f"\n== whole pipeline, {args.n} booked appointments, mode {args.mode}, "
          f"{'PostgreSQL' if args.database_url and args.database_url.startswith('postgresql') else 'SQLite'}, "
          f"{len(rounds)} rounds")
    print_rounds(rounds, [("events_s", "events/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                          ("cpu_ms_per_event", "CPU ms/ev"), ("all_sent", "all sent"), ("loadavg", "load 1m")],
                 [("events_s", "service", "bare"), ("cpu_ms_per_event", "service", "bare")])
    if not all(result["all_sent"] for r in rounds for result in r.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
