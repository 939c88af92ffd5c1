"""A bad day in a hospital, counted: the database goes away for 7 s, the EHR stops for 10 s, WhatsApp
freezes (it takes messages but answers after the client gave up). Each fault hits a real `bridge
serve` mid-run, and the WhatsApp emulator's record of accepted messages says what was lost and what
was sent twice: nothing, and nothing.

Real parts: one `bridge serve` process on PostgreSQL (reached through a loopback proxy the test takes
down, as a server restart looks to its clients: the shared server itself is not restarted), the sekmet
FHIR server (stopped and started on the same port and data), the emulator with injected faults. The
notifications are PUT as an EHR would, retried after a refusal or 503. One stack serves the three
faults in turn (each with its own patients), so the whole module costs one start-up.

Each fault prints ``sent / expected / duplicates / seconds to recover`` (from the fault's end to the
last message sent); ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter.settings import DEMO_SECRET
from bench.multi_instance import Cluster, Events, book, outcome
from bench.pipeline_throughput import FHIR_JSON, Database, fictional_numbers
from ehr.hook_secrets import authorization_header, derive_secret
from tests.support.tcp_proxy import TcpProxy, fresh_database_behind_proxy

EVENTS = 60
numbers = iter(fictional_numbers(3 * EVENTS))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[tuple[Cluster, TcpProxy]]:
    with fresh_database_behind_proxy(postgres_url, "bridge_faults") as (_, proxied, proxy):
        cluster = Cluster(tmp_path_factory.mktemp("faults"), Database(proxied))
        try:
            cluster.start_cluster(1, tick_seconds=0.2, lease_seconds=10.0)
            yield cluster, proxy
        finally:
            cluster.stop()


async def notify_as_an_ehr(cluster: Cluster, events: Events, event_at: dict[str, float], *,
                           retry_for: float = 90.0, spread_seconds: float = 0.0) -> int:
    """PUTs every appointment at the intake, 16 at a time; a refusal, a 503 or no answer is retried a
    second later, as an EHR's rest-hook retries would. Fills recipient digits → first event time;
    returns how many PUTs were not answered 200. ``spread_seconds``: the first PUTs start evenly over that
    time instead of all at once (so that some surely meet a fault that starts early in the run)."""
    headers = {"Authorization": authorization_header(derive_secret(DEMO_SECRET.encode(), "appointment")),
               "Content-Type": FHIR_JSON}
    slots, refused = asyncio.Semaphore(16), [0]
    async with httpx.AsyncClient(timeout=15) as client:
        async def put(index: int, appointment: dict[str, Any]) -> None:
            await asyncio.sleep(spread_seconds * index / len(events.appointments))
            url = f"{cluster.urls[0]}/ehr/notify/appointment/Appointment/{appointment['id']}"
            deadline = time.monotonic() + retry_for
            async with slots:
                event_at.setdefault(events.number_of[appointment["id"]], time.time())
                while True:
                    try:
                        if (await client.put(url, content=json.dumps(appointment), headers=headers)).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    refused[0] += 1
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the intake never accepted Appointment/{appointment['id']}")
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(put(index, appointment) for index, appointment in enumerate(events.appointments)))
    return refused[0]


def run_with_fault(cluster: Cluster, fault_start: Any, fault_end: Any, *, fault_seconds: float,
                   into_run: float | None = 0.3, spread_seconds: float = 0.0) -> dict[str, Any]:
    """Books EVENTS appointments and notifies them; the fault starts ``into_run`` seconds into the
    notifications (None: just before them) and ends ``fault_seconds`` later. Counts what the emulator
    accepted: ``sent`` patients of ``expected``, ``duplicates``, ``recovered_s`` from the fault's end to
    the last send, ``during`` messages sent while the fault lasted, ``refused`` PUTs not answered 200."""
    events = asyncio.run(book(cluster, [next(numbers) for _ in range(EVENTS)]))
    event_at: dict[str, float] = {}

    async def scenario() -> tuple[int, float, float]:
        if into_run is None:
            await asyncio.to_thread(fault_start)
        sending = asyncio.create_task(notify_as_an_ehr(cluster, events, event_at, spread_seconds=spread_seconds))
        if into_run is not None:
            await asyncio.sleep(into_run)
            await asyncio.to_thread(fault_start)
        began = time.time()
        await asyncio.sleep(fault_seconds)
        await asyncio.to_thread(fault_end)
        return await sending, began, time.time()

    refused, began, ended = asyncio.run(scenario())
    counted = outcome(cluster, event_at, timeout=120)
    sent_at = _accepted_times(cluster, set(event_at))
    figures = {"sent": counted["sent"], "expected": EVENTS, "duplicates": counted["duplicates"],
               "recovered_s": round(max(0.0, max(sent_at, default=ended) - ended), 1),
               "during": sum(began < at < ended for at in sent_at), "refused": refused}
    print("fault figures:", figures)
    return figures


def _accepted_times(cluster: Cluster, wanted: set[str]) -> list[float]:
    messages = httpx.get(f"{cluster.emulator_url}/_emulator/messages?type=template", timeout=30).json()["messages"]
    return [float(m["accepted_at"]) for m in messages
            if "".join(ch for ch in str((m.get("payload") or {}).get("to") or "") if ch.isdigit()) in wanted]


def test_a_database_restart_mid_run_loses_nothing_and_sends_nothing_twice(stack: tuple[Cluster, TcpProxy]) -> None:
    cluster, proxy = stack
    # Notifications spread over 3 s: the database goes at 0.3 s, while some are being processed and
    # others have not arrived yet (all 60 can otherwise be stored before the fault on a quiet machine).
    figures = run_with_fault(cluster, proxy.down, proxy.up, fault_seconds=7.0, spread_seconds=3.0)
    assert (figures["sent"], figures["duplicates"]) == (EVENTS, 0), figures
    assert figures["refused"] > 0  # the intake did see the database gone (503), and the EHR retried


def test_an_ehr_down_for_ten_seconds_loses_nothing_and_sends_nothing_twice(stack: tuple[Cluster, TcpProxy]) -> None:
    cluster, _ = stack
    assert cluster.ehr is not None
    ehr = cluster.ehr
    # Down before the notifications: every event's re-read finds the EHR gone, and is retried.
    figures = run_with_fault(cluster, ehr.stop, ehr.start, fault_seconds=10.0, into_run=None)
    assert (figures["sent"], figures["duplicates"], figures["during"]) == (EVENTS, 0, 0), figures


def test_a_frozen_whatsapp_that_sends_without_answering_sends_nothing_twice(stack: tuple[Cluster, TcpProxy]) -> None:
    """Each of the next 20 sends is accepted (the patient gets it, the status webhook follows) but
    answered only after the service's timeout (5 s here): the outcome is unknown to the sender."""
    cluster, _ = stack
    frozen = {"responses": [{"accept": True, "delay_seconds": 8.0}] * 20}

    def freeze() -> None:
        httpx.post(f"{cluster.emulator_url}/_emulator/faults", json=frozen, timeout=10).raise_for_status()

    figures = run_with_fault(cluster, freeze, lambda: None, fault_seconds=8.0)
    assert (figures["sent"], figures["duplicates"]) == (EVENTS, 0), figures
