"""The subscription manager and feed health (adapter.feeds.polling) against the real sekmet server.

Endpoints point at a closed loopback port under a per-test path (nothing is delivered from here)
and every Subscription a test leaves is deleted, so tests cannot see each other's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine

from adapter.feeds.health import feed_health
from adapter.feeds.inbox import InboxStore
from adapter.feeds.polling import (
    check_subscriptions,
    manage_subscriptions_once,
    polled_feeds,
    subscribed_specs,
)
from adapter.feeds.runner import FeedRunner
from ehr.client import FhirClient
from ehr.notifications import IncomingNotification
from ehr.subscriptions import DEFAULT_SUBSCRIPTION_SPECS, notify_endpoint

MASTER = b"synthetic-master-secret-for-tests"
pytestmark = pytest.mark.fhir


@pytest_asyncio.fixture
async def base(fhir_client: FhirClient) -> AsyncIterator[str]:
    prefix = f"http://127.0.0.1:9/bridge-{uuid.uuid4().hex[:10]}"
    yield prefix
    for sub in await fhir_client.search("Subscription", [("_count", "200")]):
        if str(sub.get("channel", {}).get("endpoint", "")).startswith(prefix):
            await fhir_client.delete("Subscription", sub["id"])


def rest_hook(endpoint: str, status: str = "requested") -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": status, "reason": "synthetic test", "criteria": "Appointment",
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}}


async def ours(client: FhirClient, base: str) -> dict[str, str]:
    """key -> status of the Subscriptions pointing at this test's notify endpoints."""
    found = {}
    for sub in await client.search("Subscription", [("_count", "200")]):
        endpoint = str(sub.get("channel", {}).get("endpoint", ""))
        if endpoint.startswith(notify_endpoint(base, "")):
            found[endpoint.rsplit("/", 1)[1]] = sub["status"]
    return found


async def test_the_manager_deletes_stale_subscriptions_and_only_ours(
    engine: Engine, fhir_client: FhirClient, base: str
) -> None:
    stale = await fhir_client.create(rest_hook(notify_endpoint(base, "old-feed")))
    backport = await fhir_client.create(rest_hook(notify_endpoint(base, "backport-appointments")))
    foreign = await fhir_client.create(rest_hook(f"{base}/someone-else/notify/old-feed"))

    states = await manage_subscriptions_once(engine, fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url=base,
                                             master_secret=MASTER, keep_keys={"backport-appointments"})

    assert [(s.key, s.action) for s in states] == [
        ("appointment", "created"), ("diagnostic-report", "created"), ("old-feed", "deleted-stale")]
    assert [s.fhir_id for s in states if s.action == "deleted-stale"] == [stale["id"]]
    assert await ours(fhir_client, base) == {
        "appointment": "active", "diagnostic-report": "active", "backport-appointments": "active"}
    assert (await fhir_client.read("Subscription", foreign["id"]))["id"] == foreign["id"]
    assert (await fhir_client.read("Subscription", backport["id"]))["id"] == backport["id"]
    await fhir_client.delete("Subscription", foreign["id"])
    health = {h.feed: h for h in feed_health(engine)}
    assert sorted(health) == ["rest-hook:appointment", "rest-hook:diagnostic-report"]
    assert all(h.status == "active" and h.healthy and h.last_error is None for h in health.values())


async def test_an_off_subscription_is_seen_and_reactivated(
    engine: Engine, fhir_client: FhirClient, base: str
) -> None:
    spec = DEFAULT_SUBSCRIPTION_SPECS[0]
    [created] = await manage_subscriptions_once(engine, fhir_client, [spec], public_base_url=base,
                                                master_secret=MASTER)
    stored = await fhir_client.read("Subscription", str(created.fhir_id))
    await fhir_client.update({**stored, "status": "off"})  # an EHR admin switched it off

    [seen] = await check_subscriptions(engine, fhir_client, [spec], public_base_url=base)
    [health] = feed_health(engine)
    assert (seen.status, health.feed, health.status, health.healthy) == ("off", "rest-hook:appointment", "off", False)

    [state] = await manage_subscriptions_once(engine, fhir_client, [spec], public_base_url=base, master_secret=MASTER)

    assert (state.action, state.status, state.fhir_id) == ("reactivated", "active", created.fhir_id)
    assert await ours(fhir_client, base) == {"appointment": "active"}
    [health] = feed_health(engine)
    assert (health.status, health.healthy) == ("active", True)


async def test_switching_to_polling_removes_our_subscriptions(
    engine: Engine, fhir_client: FhirClient, base: str
) -> None:
    await manage_subscriptions_once(engine, fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url=base,
                                    master_secret=MASTER)
    assert len(await ours(fhir_client, base)) == 2

    wanted = subscribed_specs("polling", DEFAULT_SUBSCRIPTION_SPECS)
    states = await manage_subscriptions_once(engine, fhir_client, wanted, public_base_url=base, master_secret=MASTER)

    assert sorted((s.key, s.action) for s in states) == [
        ("appointment", "deleted-stale"), ("diagnostic-report", "deleted-stale")]
    assert await ours(fhir_client, base) == {}
    assert feed_health(engine) == []  # the feeds are gone, not reported as broken


async def test_the_runner_manages_and_polls_and_health_reports_each_feed(
    engine: Engine, fhir_client: FhirClient, base: str
) -> None:
    async def manage() -> None:
        await manage_subscriptions_once(engine, fhir_client, subscribed_specs("both", DEFAULT_SUBSCRIPTION_SPECS),
                                        public_base_url=base, master_secret=MASTER)

    leader = [False]
    runner = FeedRunner(engine, fhir_client, polled_feeds("both", DEFAULT_SUBSCRIPTION_SPECS),
                        safety_lag=timedelta(seconds=60), poll_interval=timedelta(seconds=60),
                        check_interval=timedelta(seconds=300), manage=manage, is_leader=lambda: leader[0])
    due: dict[str, float] = {}
    await runner.tick(0.0, due)
    assert feed_health(engine) == [] and await ours(fhir_client, base) == {}  # not the leader: nothing ran

    leader[0] = True
    await runner.tick(0.0, due)
    InboxStore(engine).accept([IncomingNotification("appointment", "resource", "Appointment", "a-1", "1")])

    health = {h.feed: h for h in feed_health(engine)}
    assert sorted(health) == ["poll:appointment", "poll:diagnostic-report", "rest-hook:appointment",
                              "rest-hook:diagnostic-report"]
    assert [(h.kind, h.status, h.healthy) for h in health.values()] == [
        ("poll", "ok", True), ("poll", "ok", True), ("rest-hook", "active", True), ("rest-hook", "active", True)]
    assert health["poll:appointment"].watermark is not None  # the EHR's clock when polling began
    assert health["rest-hook:appointment"].last_event_at is not None
    assert health["rest-hook:diagnostic-report"].last_event_at is None
    assert due == {"manage": 300.0, "poll": 60.0}
    stale = feed_health(engine, stale_after=timedelta(minutes=1), now=datetime.now(UTC) + timedelta(minutes=5))
    assert not any(h.healthy for h in stale)
    assert health["poll:appointment"].as_dict()["last_run_at"] is not None
