"""Topic-based (Backport IG) feeds end to end: the real sekmet FHIR server notifies the real intake
router over loopback; the inbox and the feed table are real (SQLite and PostgreSQL).

Covers: create + handshake + an event reaching the inbox exactly once (a re-delivery is a no-op);
a jump in event numbers recovered by a re-sync search (sekmet has no ``$events``); a Subscription
pushed into ``error`` by a failing receiver found by the heartbeat/``$status`` check, re-activated
and re-synced so bookings made meanwhile arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.feeds.backport_monitor import BackportFeedConfig, BackportFeedMonitor, feed_health
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import BackportFeed, InboxEvent
from ehr.auth import FhirAuth
from ehr.backport import EXT_CONTENT, BackportSpec, PayloadContent, discover_topics
from ehr.client import FhirClient
from ehr.hook_secrets import authorization_header, derive_secret
from ehr.intake import build_intake_router
from tests.support.asgi_server import serve_in_thread
from tests.support.fhir_server import RunningFhirServer, start_fhir_server
from tests.support.synthetic import synthetic_appointment

pytestmark = pytest.mark.fhir
MASTER = b"synthetic-master-secret-for-tests"
KEY = "bp-appointment"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/appointment-booked"


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    # One delivery try: a failing receiver turns the Subscription to `error` within about a second.
    with start_fhir_server(tmp_path_factory.mktemp("backport"), notify_method="post-endpoint", retries=1) as server:
        yield server


@dataclass
class Receiver:
    """The intake behind a switch: ``fail`` answers 500 (a broken receiver); ``drop_events`` answers
    200 to that many event notifications without passing them on (notifications lost in transit)."""

    app: Any
    fail: bool = False
    drop_events: int = 0
    dropped: list[bytes] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not (self.fail or self.drop_events):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if self.fail or b"event-notification" in body:
            if not self.fail:
                self.drop_events -= 1
                self.dropped.append(body)
            status = 500 if self.fail else 200
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        replay = [{"type": "http.request", "body": body, "more_body": False}]
        await self.app(scope, lambda: _pop(replay), send)


async def _pop(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return messages.pop(0) if messages else {"type": "http.disconnect"}


@dataclass
class Feed:
    engine: Engine
    fhir: FhirClient
    monitor: BackportFeedMonitor
    receiver: Receiver
    public_base_url: str


@pytest_asyncio.fixture
async def feed_factory(ehr: RunningFhirServer, engine: Engine) -> AsyncIterator[Callable[..., Awaitable[Feed]]]:
    made: list[Feed] = []

    async with FhirClient(ehr.base_url, FhirAuth.none(), 10.0) as fhir:
        with _Servers() as servers:
            async def make(content: PayloadContent = "id-only", heartbeat: int = 60) -> Feed:
                spec = BackportSpec(KEY, TOPIC, "Appointment", content, heartbeat_seconds=heartbeat)
                config = BackportFeedConfig(gap_grace=timedelta(seconds=0.3), resync_margin=timedelta(seconds=2))
                holder: dict[str, BackportFeedMonitor] = {}
                app = FastAPI()
                app.include_router(build_intake_router(InboxStore(engine), MASTER, [KEY], 1 << 20,
                                                       on_backport=lambda key, st: holder["m"].record(key, st)))
                receiver = Receiver(app)
                url = servers.start(receiver)
                holder["m"] = BackportFeedMonitor(engine, fhir, [spec], config, public_base_url=url,
                                                  master_secret=MASTER)
                feed = Feed(engine, fhir, holder["m"], receiver, url)
                made.append(feed)
                return feed

            yield make
            for feed in made:  # the shared EHR must stop notifying this test's endpoint
                row = _feed_row(feed.engine)
                if row is not None and row.subscription_id:
                    await fhir.delete("Subscription", row.subscription_id)


class _Servers:
    def __init__(self) -> None:
        self._contexts: list[Any] = []

    def __enter__(self) -> _Servers:
        return self

    def start(self, app: Any) -> str:
        context = serve_in_thread(app)
        self._contexts.append(context)
        return str(context.__enter__())

    def __exit__(self, *exc: Any) -> None:
        for context in reversed(self._contexts):
            context.__exit__(None, None, None)


def _feed_row(engine: Engine) -> BackportFeed | None:
    with Session(engine) as session:
        return session.get(BackportFeed, KEY)


def _inbox(engine: Engine, resource_id: str | None = None) -> list[InboxEvent]:
    with Session(engine) as session:
        query = select(InboxEvent).order_by(col(InboxEvent.id))
        if resource_id is not None:
            query = query.where(col(InboxEvent.resource_id) == resource_id)
        return list(session.exec(query))


async def _until(check: Callable[[], Any], what: str, seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _started(feed: Feed) -> str:
    states = await feed.monitor.ensure()
    assert [state.action for state in states] == ["created"]
    sub_id = str(states[0].fhir_id)
    await _until_async(lambda: _status(feed.fhir, sub_id), "active", "activation")
    await _until(lambda: (row := _feed_row(feed.engine)) and row.last_event_number == 0, "the handshake")
    return sub_id


async def _book(fhir: FhirClient) -> str:
    created = await fhir.create(synthetic_appointment("Patient/example-1"))
    return str(created["id"])


async def test_the_ehr_advertises_the_topic(ehr: RunningFhirServer) -> None:
    async with FhirClient(ehr.base_url, FhirAuth.none(), 10.0) as fhir:
        assert TOPIC in await discover_topics(fhir)


async def test_created_handshaken_and_fed_exactly_once(feed_factory: Callable[..., Awaitable[Feed]]) -> None:
    feed = await feed_factory("id-only")
    sub_id = await _started(feed)
    sub = await feed.fhir.read("Subscription", sub_id)
    assert sub["criteria"] == TOPIC and sub["status"] == "active"
    assert sub["channel"]["_payload"]["extension"] == [{"url": EXT_CONTENT, "valueCode": "id-only"}]
    assert sub["channel"]["header"] == [f"Authorization: {authorization_header(derive_secret(MASTER, KEY))}"]

    booked = await _book(feed.fhir)
    events = await _until(lambda: _inbox(feed.engine, booked), "the event in the inbox")
    assert [(e.kind, e.resource_type) for e in events] == [("resource", "Appointment")]
    assert events[0].dedupe_key.startswith(f"bp:{KEY}:{sub_id}:1:1:")
    # The feed state is recorded after the items are stored, in a transaction of its own.
    await _until(lambda: (row := _feed_row(feed.engine)) and row.last_event_number == 1, "the event number recorded")

    # The EHR delivers the same event again (a retry after a lost 200): nothing new is stored.
    again = _event_bundle(sub_id, 1, f"Appointment/{booked}")
    response = httpx.post(f"{feed.public_base_url}/ehr/notify/{KEY}", content=json.dumps(again),
                          headers={"Authorization": authorization_header(derive_secret(MASTER, KEY)),
                                   "Content-Type": "application/fhir+json"})
    assert response.status_code == 200
    assert len(_inbox(feed.engine, booked)) == 1
    assert await feed.monitor.run_once() == 0  # nothing missing, heartbeat not overdue
    assert feed_health(feed.engine)[0] | {"last_heartbeat_at": None, "last_notification_at": None} == {
        "feed": KEY, "kind": "backport", "subscription": sub_id, "status": "active", "last_event_number": 1,
        "gap": False, "last_heartbeat_at": None, "last_notification_at": None, "recoveries": 0,
        "last_recovery": None, "last_recovery_at": None, "healthy": True}


async def test_a_jump_in_event_numbers_is_recovered_by_a_resync(
        feed_factory: Callable[..., Awaitable[Feed]]) -> None:
    feed = await feed_factory("full-resource")
    await _started(feed)
    feed.receiver.drop_events = 1
    missed = await _book(feed.fhir)
    await _until(lambda: feed.receiver.dropped, "the lost notification")
    seen = await _book(feed.fhir)
    await _until(lambda: _inbox(feed.engine, seen), "the next event")
    # The feed state is recorded after the items are stored, in a transaction of its own.
    row = await _until(lambda: (found := _feed_row(feed.engine)) and found.gap_since and found, "the gap recorded")
    assert (row.last_event_number, row.pending_numbers) == (0, "2")
    assert _inbox(feed.engine, missed) == []

    await asyncio.sleep(0.4)  # the grace period
    assert await feed.monitor.run_once() == 1
    assert await feed.monitor.run_once() == 0  # recovered once; a second tick changes nothing
    assert [e.resource_id for e in _inbox(feed.engine, missed)] == [missed]  # stored exactly once
    assert len(_inbox(feed.engine, seen)) == 1  # full-resource: same version key, not stored twice
    row = _feed_row(feed.engine)
    assert row is not None and row.gap_since is None and row.last_event_number == 2
    assert (row.recoveries, row.last_recovery) == (1, "gap")


async def test_a_subscription_in_error_is_found_reactivated_and_resynced(
        feed_factory: Callable[..., Awaitable[Feed]]) -> None:
    feed = await feed_factory("full-resource", heartbeat=1)
    sub_id = await _started(feed)
    feed.receiver.fail = True
    during_failure = await _book(feed.fhir)
    status = await _until_async(lambda: _status(feed.fhir, sub_id), "error", "the Subscription in error")
    assert status == "error"
    while_in_error = await _book(feed.fhir)  # the EHR neither counts nor sends this one
    feed.receiver.fail = False

    async def recovered() -> bool:
        await feed.monitor.run_once()
        row = _feed_row(feed.engine)
        return row is not None and row.recoveries >= 1

    await _until_async(recovered, True, "the heartbeat/$status check", seconds=20)
    assert await _until_async(lambda: _status(feed.fhir, sub_id), "active", "re-activation") == "active"
    for booked in (during_failure, while_in_error):
        assert [e.resource_id for e in _inbox(feed.engine, booked)] == [booked]
    row = _feed_row(feed.engine)
    assert row is not None and row.last_recovery == "error"
    after = await _book(feed.fhir)  # fed again through notifications
    await _until(lambda: _inbox(feed.engine, after), "an event after re-activation")
    await _until(lambda: feed_health(feed.engine)[0]["healthy"], "a healthy feed")


async def _status(fhir: FhirClient, sub_id: str) -> str:
    return str((await fhir.read("Subscription", sub_id)).get("status"))


async def _until_async(probe: Callable[[], Awaitable[Any]], wanted: Any, what: str, seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await probe()
        if value == wanted:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _event_bundle(sub_id: str, number: int, focus: str) -> dict[str, Any]:
    status = {"resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueReference": {"reference": f"Subscription/{sub_id}"}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "events-since-subscription-start", "valueString": str(number)},
        {"name": "notification-event", "part": [{"name": "event-number", "valueString": str(number)},
                                                {"name": "focus", "valueReference": {"reference": focus}}]}]}
    return {"resourceType": "Bundle", "type": "history", "entry": [{"fullUrl": "urn:uuid:1", "resource": status}]}
