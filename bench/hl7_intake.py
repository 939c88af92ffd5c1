"""HL7 v2 intake over MLLP: messages acknowledged per second and ACK latency, with an in-memory or the real store.

    python bench/hl7_intake.py                                  # N=3000 messages, C=4 connections
    python bench/hl7_intake.py --messages 10000 --connections 8
    python bench/hl7_intake.py --store sqlite                   # the service's store on a temp SQLite file
    python bench/hl7_intake.py --store postgresql --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

``ehr.hl7.listener.MllpListener`` serves a loopback port in this process. With ``--store memory``
(the default) its store port is an in-memory dict (dedupe on facility + MSH-10), so the figures are
the listener's own cost: MLLP framing, python-hl7 parsing, mapping to events, ACK building. With
``sqlite`` or ``postgresql`` it is the service's ``adapter.feeds.hl7_store.Hl7MessageStore`` on a
fresh migrated database: each ACK follows one committed transaction (raw text encrypted, dedupe,
the per-appointment order row, the receipt's audit entry). C clients (``ehr.hl7.client.MllpClient``, one
connection each, one message at a time as MLLP senders do) send N synthetic messages between them:
a mix of SIU S12/S13/S15/S26 and ORU^R01 (about 2 KB each, the size of the FHIR-Converter
samples), 5 % of them resends of an earlier control id. Latency is from just before the frame is
written until its ACK is parsed. Clients share the process (and its GIL) with the listener, so the
figures include client cost. Bounded: it stops after N messages or ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import fresh_database, percentile
from bench.machine_info import machine
from ehr.hl7.client import MllpClient
from ehr.hl7.config import load_config
from ehr.hl7.events import ParsedMessage
from ehr.hl7.listener import MllpListener
from ehr.hl7.ports import MessageStore, StoreResult

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

_PAD = "NTE|{n}||Synthetic note line to bring the message to a realistic size " + "x" * 120


class MemoryStore:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    async def store(self, message: ParsedMessage) -> StoreResult:
        if message.dedupe_key in self.seen:
            return StoreResult.DUPLICATE
        self.seen.add(message.dedupe_key)
        return StoreResult.STORED


def synthetic(i: int) -> str:
    control = f"BENCH-{i}"
    kind = i % 5
    if kind == 4:
        head = [f"MSH|^~\\&|SYNLAB|SYNLABFAC|BRIDGE|BRIDGEFAC|20261201090000||ORU^R01^ORU_R01|{control}|P|2.5.1",
                f"PID|1||SYN-{i % 997}^^^SYNHOSP&1.2.3.4&ISO^MR||SYNTHETIC^PATIENT",
                "OBR|" + "|".join(["1", "", f"RPT-{i}^SYNLAB", *[""] * 18, "20261201085900", "", "", "F"]),
                "OBX|1|ST|SYN^Synthetic^L||value||||||F"]
    else:
        trigger = ("S12", "S13", "S15", "S26")[kind]
        start = f"202612{10 + i % 18:02d}{8 + i % 9:02d}3000"
        head = [f"MSH|^~\\&|SYNSCHED|SYNFAC|BRIDGE|BRIDGEFAC|20261201090000||SIU^{trigger}^SIU_S12|{control}|P|2.5.1",
                f"SCH|PL-{i}|APT-{i // 5}||||ROUTINE|||30|MIN|^^^{start}",
                f"TQ1|1||||||{start}",
                f"PID|1||SYN-{i % 997}^^^SYNHOSP&1.2.3.4&ISO^MR||SYNTHETIC^PATIENT||19700101|U|||"
                f"1 Example Street^^Springfield^ZZ^00000||^ORN^CP^^^^^^^^^+12015550123||spa",
                "RGS|1", f"AIS|1||CHECKUP^Check-up^L|{start}", "AIL|1||CLINIC-A^ROOM-3^^NORTH CAMPUS"]
    return "\r".join(head + [_PAD.format(n=n) for n in range(1, 10)]) + "\r"


def real_store(url: str) -> MessageStore:
    from adapter.feeds.hl7_store import Hl7MessageStore
    from adapter.security.crypto import FieldCipher
    from adapter.storage.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    return Hl7MessageStore(engine, FieldCipher(os.urandom(32)))


def stored_count(store: MessageStore) -> int:
    if isinstance(store, MemoryStore):
        return len(store.seen)
    from sqlalchemy import func, select
    from sqlmodel import Session

    from adapter.feeds.hl7_store import Hl7MessageStore
    from adapter.feeds.hl7_tables import Hl7Message

    assert isinstance(store, Hl7MessageStore)
    with Session(store.engine) as session:
        return int(session.execute(select(func.count()).select_from(Hl7Message)).scalar_one())


async def run(messages: int, connections: int, max_seconds: float, store: MessageStore | None = None,
              described: str = "in-memory store") -> None:
    store = store or MemoryStore()
    bodies = [synthetic(i) for i in range(messages)]
    for i in range(0, messages, 20):  # 5 % resends of an earlier control id
        bodies[i] = bodies[max(0, i - 7)]
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with MllpListener(store, load_config({}), port=0, idle_timeout=None) as listener:
        deadline = time.perf_counter() + max_seconds

        async def client() -> None:
            async with MllpClient("127.0.0.1", listener.port, ack_timeout=10) as mllp:
                while not queue.empty() and time.perf_counter() < deadline:
                    body = queue.get_nowait()
                    started = time.perf_counter()
                    ack = await mllp.send(body)
                    latencies.append(time.perf_counter() - started)
                    codes[ack.code] += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    ordered = sorted(latencies)
    size = sum(len(b) for b in bodies) / len(bodies)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; store: {described}")
    print(f"{len(latencies)} messages ({size:,.0f} bytes average) over {connections} MLLP connections "
          f"in {elapsed:.2f} s: {len(latencies) / elapsed:,.0f} messages/s acknowledged "
          f"({len(latencies) / cpu:,.0f} per CPU-second of this process, listener and clients together)")
    print(f"ACK latency ms: p50 {percentile(ordered, 50) * 1000:.2f}, p95 {percentile(ordered, 95) * 1000:.2f}, "
          f"p99 {percentile(ordered, 99) * 1000:.2f}, max {ordered[-1] * 1000:.2f}")
    print(f"ACK codes: {dict(codes)}; stored {stored_count(store)} distinct (facility, MSH-10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--store", choices=["memory", "sqlite", "postgresql"], default="memory")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="server for --store postgresql (a fresh "
                        "database is created on it and dropped after)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.store == "memory":
        asyncio.run(run(args.messages, args.connections, args.max_seconds))
        return
    with fresh_database(args.store, args.pg_url, "bench_hl7_intake") as (url, described):
        asyncio.run(run(args.messages, args.connections, args.max_seconds, real_store(url), described))


if __name__ == "__main__":
    main()
