"""Three service instances, as separate ``bridge serve`` processes, share one PostgreSQL database: EHR
notifications PUT at any instance's intake (round-robin) reach every patient exactly once, also when one
instance is SIGKILLed mid-run (its leased events and sends return to the others after the lease).

Real parts: the sekmet FHIR server (re-reads of every Appointment and Patient), the WhatsApp emulator
(its record of accepted messages is the ground truth for losses and duplicates, its status webhooks settle
sends whose answer a killed instance did not record), PostgreSQL. The stack is the benchmark's
(:mod:`bench.multi_instance`). ``BRIDGE_TEST_MULTI_EVENTS`` sets the events per run (default 1000: two
runs, 2,000 events, in about three minutes on two vCPUs; ``python bench/multi_instance.py --kill`` runs
2,000 per run).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.feeds.tables import InboxEvent
from adapter.outbox.tables import OutboxMessage
from bench.multi_instance import Cluster, book, notify, outcome
from bench.pipeline_throughput import Database, fictional_numbers

EVENTS = int(os.environ.get("BRIDGE_TEST_MULTI_EVENTS", "1000"))
INSTANCES = 3
LEASE_SECONDS = 10.0


def _states(engine: Engine, model: type[OutboxMessage] | type[InboxEvent]) -> dict[str, int]:
    with Session(engine) as session:
        return dict(session.exec(select(model.state, func.count()).group_by(col(model.state))).all())


def _settled(engine: Engine, expected_sent: int, timeout: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        outbox = _states(engine, OutboxMessage)
        if (outbox.get("sent", 0) >= expected_sent and not outbox.get("sending")) or time.monotonic() > deadline:
            return outbox
        time.sleep(0.5)


def test_three_instances_send_each_event_once_even_when_one_is_killed(pg_engine: Engine, tmp_path: Path) -> None:
    database = Database(pg_engine.url.render_as_string(hide_password=False))
    cluster = Cluster(tmp_path, database)
    numbers = fictional_numbers(2 * EVENTS)
    try:
        cluster.start_cluster(INSTANCES, tick_seconds=0.2, lease_seconds=LEASE_SECONDS)

        # 1. Every instance healthy: PUTs spread round-robin over the three intakes.
        events = asyncio.run(book(cluster, numbers[:EVENTS]))
        calm = outcome(cluster, asyncio.run(notify(cluster, events)), timeout=240)
        assert (calm["sent"], calm["lost"], calm["duplicates"]) == (EVENTS, 0, 0), calm
        assert _settled(pg_engine, EVENTS).get("sent") == EVENTS

        # 2. Instance 1 is SIGKILLed after a third of the notifications; the EHR's retries reach the others.
        events = asyncio.run(book(cluster, numbers[EVENTS:]))
        killed = outcome(cluster, asyncio.run(notify(cluster, events, kill_after=EVENTS // 3, kill_index=1)),
                         timeout=240)
        assert cluster.instances[1].returncode == -9  # it really died by SIGKILL, mid-run
        assert (killed["sent"], killed["lost"], killed["duplicates"]) == (EVENTS, 0, 0), killed
        outbox = _settled(pg_engine, 2 * EVENTS)
        assert outbox.get("sent") == 2 * EVENTS and not outbox.get("dead"), outbox
        inbox = _states(pg_engine, InboxEvent)
        assert inbox.get("done") == 2 * EVENTS and not inbox.get("pending"), inbox  # nothing left behind
    finally:
        cluster.stop()
