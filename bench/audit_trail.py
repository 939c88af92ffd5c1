"""Audit trail: cost of writing records, chaining and checkpointing them, and verifying the trail.

    python bench/audit_trail.py                          # 50,000 records, temp SQLite file
    python bench/audit_trail.py --records 200000 --database postgresql

Phases, each timed on its own over a migrated, fresh database:

- ``record``: ``adapter.audit.trail.record`` in transactions of ``--batch`` entries (the shape of a
  bulk step such as a status webhook batch) and, separately, one entry per transaction (the shape
  of a link open); p50/p99 per transaction.
- ``chain``: the :class:`adapter.audit.checkpoints.AuditKeeper` ticking until nothing is pending —
  gapless seqs, SHA-256 chain, a signed Ed25519 checkpoint with a Merkle root every ``--every``.
- ``verify``: :func:`adapter.audit.verify.verify_trail` over everything (signatures, every hash,
  every Merkle root), in bounded memory.

Peak memory is Python's (tracemalloc) for the verify phase, which streams. A PostgreSQL database
``bench_audit_trail_<pid>_<random>`` is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapter.audit.checkpoints import AuditKeeper
from adapter.audit.signing import AuditSigner
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.audit.verify import verify_trail
from adapter.storage.db import make_engine, transaction, upgrade
from bench.harness import fresh_database, percentile
from bench.machine_info import machine


def _entry(n: int) -> AuditEntry:
    return AuditEntry(kind=Kind.DISCLOSURE, action=Action.READ, patient_ref=f"Patient/bench-{n % 5000}",
                      entity_ref=f"message/wamid.bench{n}", detail={"outbox_id": n, "template": "reminder"})


def run(args: argparse.Namespace) -> dict[str, Any]:
    with fresh_database(args.database, args.pg_url, "bench_audit_trail") as (url, described):
        engine = make_engine(url)
        upgrade(engine)
        signer = AuditSigner.throwaway()
        singles = min(2000, args.records // 10)
        batched = args.records - singles
        batch_ms: list[float] = []
        started = time.perf_counter()
        for first in range(0, batched, args.batch):
            t0 = time.perf_counter()
            with transaction(engine) as session:
                record(session, *(_entry(n) for n in range(first, min(first + args.batch, batched))))
            batch_ms.append((time.perf_counter() - t0) * 1000)
        batched_seconds = time.perf_counter() - started
        single_ms: list[float] = []
        for n in range(batched, args.records):
            t0 = time.perf_counter()
            with transaction(engine) as session:
                record(session, _entry(n))
            single_ms.append((time.perf_counter() - t0) * 1000)
        keeper = AuditKeeper(engine, signer, every=args.every, seconds=3600)
        t0 = time.perf_counter()
        chained = 0
        while (step := keeper.tick()) > 0:
            chained += step
        chain_seconds = time.perf_counter() - t0
        tracemalloc.start()
        t0 = time.perf_counter()
        report = verify_trail(engine, signer.public)
        verify_seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        engine.dispose()
    return {
        "database": described, "records": args.records,
        "record_batched": {"records_per_s": round(batched / batched_seconds), "batch": args.batch,
                           "p50_ms": round(percentile(sorted(batch_ms), 50), 2),
                           "p99_ms": round(percentile(sorted(batch_ms), 99), 2)},
        "record_single": {"transactions": singles, "p50_ms": round(percentile(sorted(single_ms), 50), 2),
                          "p99_ms": round(percentile(sorted(single_ms), 99), 2)},
        "chain": {"records": chained, "records_per_s": round(chained / chain_seconds),
                  "checkpoint_every": args.every},
        "verify": {"ok": report.ok, "records": report.checked, "checkpoints": report.checkpoints_checked,
                   "records_per_s": round(report.checked / verify_seconds),
                   "peak_python_mb": round(peak / 2**20, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=200, help="entries per transaction in the bulk phase")
    parser.add_argument("--every", type=int, default=1000, help="records per signed checkpoint")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    result = run(args)
    print(json.dumps(result))
    if not result["verify"]["ok"] or result["chain"]["records"] != args.records:
        sys.exit(1)


if __name__ == "__main__":
    main()
