"""The Backport feed monitor on a real database (SQLite and PostgreSQL): event numbers per
gap-detection mode, heartbeats that report unseen events, and recovery through ``$events`` from a
small FHIR server that advertises it (sekmet does not), over real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.feeds.backport_monitor import BackportFeedConfig, BackportFeedMonitor
from adapter.feeds.tables import BackportFeed, InboxEvent
from ehr.auth import FhirAuth
from ehr.backport import BackportSpec
from ehr.backport_events import BackportStatus, GapMode, NotificationEvent
from ehr.client import FhirClient
from tests.support.asgi_server import serve_in_thread

KEY = "bp-appointment"
TOPIC = "http://example.org/topic/appointment-booked"
SPEC = BackportSpec(KEY, TOPIC, "Appointment", "id-only")


def fake_ehr() -> FastAPI:
    """A FHIR server that offers ``$events`` and finds nothing by search (so only ``$events`` can
    bring the missed events back)."""
    app = FastAPI()

    @app.get("/fhir/metadata")
    def metadata() -> JSONResponse:
        return JSONResponse({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                             "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server", "resource": [
                                 {"type": "Subscription", "operation": [
                                     {"name": "events", "definition": "http://hl7.org/fhir/uv/subscriptions-"
                                      "backport/OperationDefinition/backport-subscription-events"}]}]}]})

    @app.get("/fhir/Subscription/{sub_id}/$events")
    def events(sub_id: str, eventsSinceNumber: int, eventsUntilNumber: int) -> JSONResponse:
        parts = [{"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(n)},
            {"name": "focus", "valueReference": {"reference": f"Appointment/example-{n}"}}]}
            for n in range(eventsSinceNumber, eventsUntilNumber + 1)]
        status = {"resourceType": "Parameters", "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"Subscription/{sub_id}"}},
            {"name": "type", "valueCode": "query-event"}, *parts]}
        return JSONResponse({"resourceType": "Bundle", "type": "history", "entry": [{"resource": status}]})

    @app.get("/fhir/Appointment")
    def search() -> JSONResponse:
        return JSONResponse({"resourceType": "Bundle", "type": "searchset", "entry": []})

    return app


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with serve_in_thread(fake_ehr()) as url:
        yield f"{url}/fhir"


@pytest_asyncio.fixture
async def fhir(fake_url: str) -> AsyncIterator[FhirClient]:
    async with FhirClient(fake_url, FhirAuth.none(), 5.0) as client:
        yield client


def monitor(engine: Engine, fhir: FhirClient, mode: GapMode = "events-since-start") -> BackportFeedMonitor:
    config = BackportFeedConfig(gap_detection=mode, gap_grace=timedelta(seconds=0.1))
    return BackportFeedMonitor(engine, fhir, [SPEC], config, public_base_url="http://127.0.0.1:1",
                               master_secret=b"synthetic-master-secret-for-tests")


def status(kind: str, total: int, *numbers: int | None) -> BackportStatus:
    events = tuple(NotificationEvent(n, f"Appointment/example-{n}") for n in numbers)
    return BackportStatus(kind, "active", "Subscription/sub-1", TOPIC, total, events)


def row(engine: Engine) -> BackportFeed:
    with Session(engine) as session:
        found = session.get(BackportFeed, KEY)
    assert found is not None
    return found


def test_late_events_close_a_gap(engine: Engine, fhir: FhirClient) -> None:
    feed = monitor(engine, fhir)
    feed.record(KEY, status("handshake", 0))
    feed.record(KEY, status("event-notification", 1, 1))
    feed.record(KEY, status("event-notification", 3, 3))
    assert (row(engine).last_event_number, row(engine).pending_numbers) == (1, "3")
    assert row(engine).gap_since is not None
    feed.record(KEY, status("event-notification", 2, 2))
    assert (row(engine).last_event_number, row(engine).pending_numbers, row(engine).gap_since) == (3, "", None)


def test_a_heartbeat_reporting_unseen_events_is_a_gap(engine: Engine, fhir: FhirClient) -> None:
    feed = monitor(engine, fhir)
    feed.record(KEY, status("handshake", 0))
    feed.record(KEY, status("heartbeat", 0))
    assert row(engine).gap_since is None and row(engine).last_heartbeat_at is not None
    feed.record(KEY, status("heartbeat", 2))
    assert row(engine).gap_since is not None


def test_gap_detection_off_and_per_bundle(engine: Engine, fhir: FhirClient) -> None:
    off = monitor(engine, fhir, "off")
    off.record(KEY, status("handshake", 0))
    off.record(KEY, status("event-notification", 5, 5))
    off.record(KEY, status("heartbeat", 9))
    assert row(engine).gap_since is None
    per_bundle = monitor(engine, fhir, "per-bundle")
    per_bundle.record(KEY, status("handshake", 0))
    per_bundle.record(KEY, status("event-notification", 1, 1))
    per_bundle.record(KEY, status("event-notification", 2, 1))  # each bundle numbers its events from 1
    assert (row(engine).last_event_number, row(engine).gap_since) == (2, None)


async def test_a_gap_is_recovered_through_events_where_advertised(engine: Engine, fhir: FhirClient) -> None:
    feed = monitor(engine, fhir)
    feed.record(KEY, status("handshake", 0))
    feed.record(KEY, status("event-notification", 1, 1))
    feed.record(KEY, status("event-notification", 4, 4))
    assert await feed.run_once() == 0  # within the grace period: late notifications may still come
    time.sleep(0.15)
    assert await feed.run_once() == 1
    with Session(engine) as session:
        stored = list(session.exec(select(InboxEvent).order_by(col(InboxEvent.id))))
    assert [(event.resource_id, event.dedupe_key.startswith("bp:")) for event in stored] == [
        ("example-2", True), ("example-3", True)]
    found = row(engine)
    assert (found.last_event_number, found.gap_since, found.recoveries, found.last_recovery) == (4, None, 1, "gap")


def test_monitor_rows_are_leased_to_one_instance(engine: Engine, fhir: FhirClient) -> None:
    first, second = monitor(engine, fhir), monitor(engine, fhir)
    first.record(KEY, status("handshake", 0))
    leased: Any = first._lease(KEY)
    assert leased is not None and second._lease(KEY) is None
    first._release(KEY)
    assert second._lease(KEY) is not None
