"""Three service instances, as separate ``bridge serve`` processes with default lease and heartbeat
settings, share one PostgreSQL database on a loaded machine (a busy loop per CPU core): EHR
notifications PUT at any instance's intake (round-robin) reach every patient exactly once, round after
round, while one instance is SIGKILLed mid-round and started again: the others release its claims
when its heartbeat stops (adapter.ops.liveness), and a message it may have sent is not sent again when
WhatsApp's status names it (adapter.outbox.claims).

Real parts: the sekmet FHIR server (re-reads of every Appointment and Patient), the WhatsApp emulator
(its record of accepted messages is the ground truth for losses and duplicates, its status webhooks
settle sends whose answer a killed instance did not record), PostgreSQL. The stack is the benchmark's
(:mod:`bench.multi_instance`): the cluster starts once, then ``ROUNDS`` rounds of ``EVENTS_PER_RUN``
(``BRIDGE_TEST_MULTI_EVENTS``, default 400: 2,000 events in all); ``python bench/multi_instance.py --kill
--runs 5 --load`` runs 5 x 2,000. Each round prints sent / expected / duplicates / seconds to recover.
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
from bench.multi_instance import Cluster, Kill, book, cpu_load, round_of, split
from bench.pipeline_throughput import Database, fictional_numbers

EVENTS_PER_RUN = int(os.environ.get("BRIDGE_TEST_MULTI_EVENTS", "400"))
ROUNDS = 5
INSTANCES = 3


def _states(engine: Engine, model: type[OutboxMessage] | type[InboxEvent]) -> dict[str, int]:
    with Session(engine) as session:
        return dict(session.exec(select(model.state, func.count()).group_by(col(model.state))).all())


def test_three_instances_send_each_event_once_while_one_is_killed_round_after_round(
        pg_engine: Engine, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, Database(pg_engine.url.render_as_string(hide_password=False)))
    try:
        cluster.start_cluster(INSTANCES, tick_seconds=0.2)
        rounds = split(asyncio.run(book(cluster, fictional_numbers(ROUNDS * EVENTS_PER_RUN))), EVENTS_PER_RUN)
        with cpu_load() as busy:
            for run, events in enumerate(rounds):
                # Never instance 0: the status webhooks go there (they settle what a killed one sent).
                kill = Kill(after=EVENTS_PER_RUN // 3, index=1 + run % 2, restart_after=6.0)
                started = time.monotonic()
                figures = round_of(cluster, events, kill, timeout=240)
                print(f"round {run + 1} (busy loops: {busy}):", {
                    "sent": figures["sent"], "expected": EVENTS_PER_RUN, "duplicates": figures["duplicates"],
                    "recover_s": figures["recover_s"], "held_at_kill": figures["held_at_kill"],
                    "round_s": round(time.monotonic() - started, 1)})
                assert (figures["sent"], figures["lost"], figures["duplicates"]) == (EVENTS_PER_RUN, 0, 0), figures
                assert figures["recover_s"] is not None, figures  # every claim of the killed boot was taken over
        outbox = _states(pg_engine, OutboxMessage)  # (reminders of the appointments stay queued for later)
        assert outbox.get("sent") == ROUNDS * EVENTS_PER_RUN and not outbox.get("dead"), outbox
        inbox = _states(pg_engine, InboxEvent)
        assert inbox == {"done": ROUNDS * EVENTS_PER_RUN}, inbox  # nothing left behind
    finally:
        cluster.stop()
