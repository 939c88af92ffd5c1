"""One ``bridge serve`` on PostgreSQL with default settings, SIGKILLed mid-run and started again about
6 s later: 200 bookings arriving, each sent once. At start the instance releases the claims of its own
name's earlier boot at once (adapter.ops.liveness); a message that boot may have sent waits the
in-doubt grace for WhatsApp's status naming it and is sent again only without one
(adapter.outbox.claims). The EHR's notifications that find the service down are retried, as an EHR's
rest-hook retries would.

Real parts: a `bridge serve` process, the sekmet FHIR server, the WhatsApp emulator (its record of
accepted messages is the ground truth; it retries status webhooks that found the service down),
PostgreSQL (:mod:`bench.multi_instance`). Prints sent / expected / duplicates / seconds to recover.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.engine import Engine

from bench.multi_instance import Cluster, Kill, book, round_of
from bench.pipeline_throughput import Database, fictional_numbers

EVENTS = 200
TAKEOVER_BOUND_SECONDS = 30.0  # the claims of a killed and restarted instance are taken over within this


def test_a_killed_and_restarted_instance_sends_each_booking_once(pg_engine: Engine, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, Database(pg_engine.url.render_as_string(hide_password=False)))
    try:
        cluster.start_cluster(1)  # default settings: no lease, heartbeat or tick overrides
        kill = Kill(after=EVENTS // 3, index=0, restart_after=6.0)
        events = asyncio.run(book(cluster, fictional_numbers(EVENTS)))
        figures = round_of(cluster, events, kill, timeout=180)
        print("kill and restart:", {"sent": figures["sent"], "expected": EVENTS, "duplicates": figures["duplicates"],
                                    "recover_s": figures["recover_s"], "held_at_kill": figures["held_at_kill"]})
        assert cluster.instances[0].poll() is None  # the restarted process serves
        assert (figures["sent"], figures["lost"], figures["duplicates"]) == (EVENTS, 0, 0), figures
        assert figures["recover_s"] is not None and figures["recover_s"] <= TAKEOVER_BOUND_SECONDS, figures
    finally:
        cluster.stop()
