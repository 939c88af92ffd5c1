"""Where polling starts and how far a catch-up reaches (ehr.polling.start_point, adapter.feeds.polling):
against a real sekmet server and both databases.

A feed with no cursor starts at the last change processed (bounded), or at the EHR's clock on a fresh
install; a catch-up is read and stored a bounded set of pages at a time, moving the cursor as it goes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.feeds.health import feed_health
from adapter.feeds.polling import drop_unpolled, poll_once
from adapter.feeds.runner import FeedRunner, feeds_from_settings, health_stale_after, poll_interval
from adapter.feeds.tables import FeedState, InboxEvent, ResourceState
from adapter.storage.db import transaction, utcnow
from ehr.client import FhirClient
from ehr.polling import PollFeed, format_instant, parse_instant, start_point
from ehr.subscriptions import DEFAULT_SUBSCRIPTION_SPECS

pytestmark = pytest.mark.fhir
APPOINTMENTS = PollFeed("appointment", "Appointment")
NOW = "2030-01-10T12:00:00.000Z"


def appointment() -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked", "start": "2030-01-15T09:00:00Z",
            "end": "2030-01-15T09:30:00Z",
            "participant": [{"actor": {"reference": "Patient/example-1"}, "status": "accepted"}]}


def ref(resource: dict[str, Any]) -> str:
    return f"Appointment/{resource['id']}/_history/{resource['meta']['versionId']}"


def inbox(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [row.dedupe_key for row in session.exec(select(InboxEvent).order_by(col(InboxEvent.id)))]


def processed(engine: Engine, resource: dict[str, Any], last_updated: str | None = None) -> None:
    """Records ``resource`` as processed, as the decide step does."""
    with transaction(engine) as session:
        session.add(ResourceState(resource_type="Appointment", resource_id=resource["id"],
                                  version_id=resource["meta"]["versionId"], status=resource["status"],
                                  last_updated=last_updated or resource["meta"]["lastUpdated"], processed_at=utcnow()))


def test_a_feed_starts_at_the_last_change_processed_never_beyond_the_limit() -> None:
    lag, limit = timedelta(minutes=2), timedelta(hours=72)
    assert start_point(NOW, None, lag, limit) is None  # a fresh install: from now, nothing fetched
    assert start_point(NOW, "2030-01-10T11:50:00Z", lag, limit) == "2030-01-10T11:48:00.000Z"
    assert start_point(NOW, "2030-01-01T00:00:00Z", lag, limit) == "2030-01-07T12:00:00.000Z"
    assert start_point(NOW, "2030-01-10T12:01:00Z", timedelta(0), limit) is None  # not before now
    assert start_point(NOW, "not an instant", lag, limit) is None


async def test_without_a_cursor_polling_catches_up_from_the_last_change_processed(
    engine: Engine, ehr: FhirClient
) -> None:
    delivered = await ehr.create(appointment())  # the rest-hook brought it; the bridge processed it
    processed(engine, delivered)
    await asyncio.sleep(0.01)
    missed = [await ehr.create(appointment()) for _ in range(2)]  # the EHR gave up delivering these

    [polled] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=timedelta(0))

    assert (polled.status, polled.found, polled.new, polled.more) == ("ok", 3, 3, False)
    assert inbox(engine) == [ref(delivered), *map(ref, missed)]  # the processed one is a no-op at decide
    with Session(engine) as session:
        state = session.get(FeedState, "poll:appointment")
        assert state is not None and state.start_at == delivered["meta"]["lastUpdated"]
        assert state.watermark == missed[-1]["meta"]["lastUpdated"]


async def test_a_long_catch_up_is_stored_a_bounded_set_of_pages_at_a_time(engine: Engine, ehr: FhirClient) -> None:
    [started] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=timedelta(0))
    assert started.status == "started"  # nothing processed yet: from the EHR's clock, nothing fetched
    await asyncio.sleep(0.01)
    created = [await ehr.create(appointment()) for _ in range(25)]
    runner = FeedRunner(engine, ehr, [APPOINTMENTS], safety_lag=timedelta(0), poll_interval=timedelta(hours=1),
                        check_interval=timedelta(hours=1), page_size=10, max_pages=2)

    due: dict[str, float] = {}
    await runner.tick(100.0, due)
    assert due["poll"] == 100.0  # pages left: polled again at the next tick
    with Session(engine) as session:
        state = session.get(FeedState, "poll:appointment")
        assert state is not None and state.watermark == created[19]["meta"]["lastUpdated"]  # moved page by page
    assert len(inbox(engine)) == 20
    await runner.tick(101.0, due)

    assert due["poll"] == 101.0 + 3600  # caught up: back to the interval
    assert sorted(inbox(engine)) == sorted(map(ref, created))  # each change once


async def test_a_cursor_older_than_the_limit_is_moved_up_to_it(engine: Engine, ehr: FhirClient) -> None:
    old = format_instant(utcnow() - timedelta(days=30))
    with transaction(engine) as session:
        session.add(FeedState(feed="poll:appointment", kind="poll", key="appointment", status="ok", watermark=old,
                              start_at=old))

    [polled] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=timedelta(0), max_lookback=timedelta(hours=1))

    assert polled.status == "ok"
    with Session(engine) as session:
        state = session.get(FeedState, "poll:appointment")
        assert state is not None and state.start_at is not None
        assert parse_instant(state.start_at) > utcnow() - timedelta(hours=1, minutes=1)


def test_a_feed_no_longer_polled_loses_its_cursor(engine: Engine) -> None:
    with transaction(engine) as session:
        for feed, kind, key in [("poll:appointment", "poll", "appointment"), ("poll:results", "poll", "results"),
                                ("rest-hook:results", "rest-hook", "results")]:
            session.add(FeedState(feed=feed, kind=kind, key=key, status="ok", watermark=NOW))

    drop_unpolled(engine, [APPOINTMENTS])

    assert [health.feed for health in feed_health(engine)] == ["poll:appointment", "rest-hook:results"]


def test_the_subscriptions_mode_reconciles_unless_turned_off() -> None:
    from adapter.settings import SettingsError, load_settings

    default = load_settings(mode="demo")
    assert (default.feed_mode, poll_interval(default)) == ("subscriptions", 300.0)
    assert [feed.key for feed in feeds_from_settings(default, DEFAULT_SUBSCRIPTION_SPECS)] == [
        "appointment", "diagnostic-report"]
    off = load_settings(mode="demo", reconcile_interval_seconds=0)
    assert poll_interval(off) is None and feeds_from_settings(off, DEFAULT_SUBSCRIPTION_SPECS) == []
    assert poll_interval(load_settings(mode="demo", feed_mode="polling")) == 60.0
    assert health_stale_after(load_settings(mode="demo", reconcile_interval_seconds=3600)) == timedelta(hours=3)
    with pytest.raises(SettingsError) as refused:
        load_settings(mode="demo", reconcile_interval_seconds=5, catchup_max_hours=0)
    text = str(refused.value)
    assert "BRIDGE_RECONCILE_INTERVAL_SECONDS" in text and "0 to turn the reconcile off" in text
    assert "BRIDGE_CATCHUP_MAX_HOURS" in text
