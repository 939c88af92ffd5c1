"""The EHR event feeds: which are configured, one polling round, the subscription manager, health.

``feed_mode`` (settings) picks the feeds: ``subscriptions`` (classic R4 rest-hook,
https://hl7.org/fhir/R4/subscription.html), ``polling`` (``_lastUpdated`` searches, :mod:`ehr.polling`)
or ``both`` (rest-hook plus a polling reconcile, because a rest-hook cannot report what it failed
to deliver). Either way the default Appointment feed has the criteria ``Appointment``: every change,
so cancellations, reschedules and no-shows done in the EHR arrive as events too (a classic
``status=booked`` criterion never reports them) and the rule engine (:mod:`adapter.scheduling.decide`) acts on
the status transition.

- :func:`poll_once` polls every feed once and stores what it found in the inbox, the search's
  audit entry and the new watermark in ONE transaction (DESIGN.md: audit in the step's transaction).
  It is a plain function: with several instances the caller runs it under the leader lock.
- :func:`manage_subscriptions_once` makes the EHR's Subscriptions equal to the configuration
  (create, re-activate, delete stale) and records each one's health.
- :func:`feed_health` reports each feed for ``/health`` and ``bridge feeds status``.
- :class:`adapter.feeds.runner.FeedRunner` ticks both on their intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.fhir_access import query_entry
from adapter.audit.trail import Outcome, record
from adapter.feeds.inbox import dedupe_key
from adapter.feeds.tables import FeedState, InboxEvent
from adapter.storage.db import insert_ignoring_duplicates, transaction, utcnow
from ehr.client import FhirClient
from ehr.errors import FhirError
from ehr.polling import (
    DEFAULT_PAGE_SIZE,
    PollFeed,
    PollResult,
    later,
    poll_changes,
    poll_params,
    poll_since,
    server_now,
)
from ehr.subscriptions import (
    SubscriptionSpec,
    SubscriptionState,
    delete_stale_subscriptions,
    ensure_subscriptions,
    subscription_status,
)

FeedMode = Literal["subscriptions", "polling", "both"]
log = logging.getLogger(__name__)


def subscribed_specs(mode: FeedMode, specs: Sequence[SubscriptionSpec]) -> list[SubscriptionSpec]:
    """The Subscriptions the EHR should hold: all specs unless ``mode`` is ``polling`` (then none,
    and the manager deletes ours)."""
    return [] if mode == "polling" else list(specs)


def polled_feeds(mode: FeedMode, specs: Sequence[SubscriptionSpec]) -> list[PollFeed]:
    """The feeds to poll: one per spec in ``polling`` and ``both`` modes, none in ``subscriptions``."""
    return [] if mode == "subscriptions" else [PollFeed(spec.key, spec.criteria) for spec in specs]


@dataclass(frozen=True)
class PollOutcome:
    """One feed's poll: ``status`` ``started`` (first poll: the EHR's clock noted, nothing queued),
    ``ok`` or ``failed`` (``error`` is the error class); ``new`` how many changes were queued."""

    key: str
    status: Literal["started", "ok", "failed"]
    found: int = 0
    new: int = 0
    error: str | None = None


async def poll_once(engine: Engine, client: FhirClient, feeds: Sequence[PollFeed], *, safety_lag: timedelta,
                    page_size: int = DEFAULT_PAGE_SIZE, on_new: Callable[[], None] | None = None) -> list[PollOutcome]:
    """Polls each feed once (Subscriptions Backport IG's advice for missed notifications is the same
    query: https://hl7.org/fhir/uv/subscriptions-backport/errors.html). Never raises for an EHR
    failure: it is recorded in the feed's health and the watermark stays, so the next poll retries.
    ``on_new`` is called when something was queued (e.g. ``Pipeline.wake_inward``)."""
    outcomes: list[PollOutcome] = []
    for feed in feeds:
        outcome = await _poll_feed(engine, client, feed, safety_lag, page_size)
        if outcome.status == "failed":
            log.warning("polling %s failed (%s); the next poll retries from the same watermark", feed.key,
                        outcome.error)
        outcomes.append(outcome)
    if on_new is not None and any(outcome.new for outcome in outcomes):
        on_new()
    return outcomes


async def _poll_feed(engine: Engine, client: FhirClient, feed: PollFeed, safety_lag: timedelta,
                     page_size: int) -> PollOutcome:
    state = await asyncio.to_thread(_load, engine, f"poll:{feed.key}")
    if state is None or state.watermark is None:
        start_params = [("_sort", "-_lastUpdated"), ("_count", "1")]
        try:
            started = await server_now(client, feed)
        except FhirError as error:
            await asyncio.to_thread(_failed, engine, feed, start_params, error, "poll-start")
            return PollOutcome(feed.key, "failed", error=error_name(error))
        await asyncio.to_thread(_started, engine, feed, started, start_params)
        return PollOutcome(feed.key, "started")
    since = poll_since(state.watermark, state.start_at, safety_lag)
    try:
        result = await poll_changes(client, feed, since, page_size=page_size)
    except FhirError as error:
        await asyncio.to_thread(_failed, engine, feed, poll_params(feed, since, page_size), error, "poll")
        return PollOutcome(feed.key, "failed", error=error_name(error))
    new = await asyncio.to_thread(_stored, engine, result)
    return PollOutcome(feed.key, "ok", len(result.changes), new)


def _load(engine: Engine, feed: str) -> FeedState | None:
    with Session(engine) as session:
        return session.get(FeedState, feed)


def _row(session: Session, kind: str, key: str, status: str) -> FeedState:
    row = session.get(FeedState, f"{kind}:{key}"[:80], with_for_update=True)
    return row or FeedState(feed=f"{kind}:{key}"[:80], kind=kind, key=key[:64], status=status)


def _started(engine: Engine, feed: PollFeed, started: str, params: list[tuple[str, str]]) -> None:
    now = utcnow()
    with transaction(engine) as session:
        row = _row(session, "poll", feed.key, "ok")
        row.status, row.watermark, row.start_at = "ok", started, started
        row.last_run_at, row.last_ok_at, row.last_error, row.last_found = now, now, None, 0
        session.add(row)
        record(session, query_entry(feed.resource_type, params, step="poll-start", results=0))


def _stored(engine: Engine, result: PollResult) -> int:
    """The changes into the inbox (deduped on type/id/version), the audit entry and the watermark,
    in one transaction: a crash leaves either all of them or none (and the poll is repeated)."""
    now = utcnow()
    rows = [{"dedupe_key": dedupe_key(item), "kind": item.kind, "subscription_key": item.subscription_key,
             "resource_type": item.resource_type, "resource_id": item.resource_id, "version_id": item.version_id,
             "state": "pending", "attempts": 0, "next_attempt_at": now, "received_at": now}
            for item in result.changes]
    feed = result.feed
    with transaction(engine) as session:
        row = _row(session, "poll", feed.key, "ok")
        new = insert_ignoring_duplicates(session, InboxEvent, rows, "dedupe_key")
        record(session, query_entry(feed.resource_type, result.params, step="poll", results=len(result.changes)))
        if result.newest is not None:
            row.watermark = _later(row.watermark, result.newest)
        row.status, row.last_run_at, row.last_ok_at, row.last_error, row.last_found = "ok", now, now, None, new
        session.add(row)
    return new


def _failed(engine: Engine, feed: PollFeed, params: list[tuple[str, str]], error: FhirError, step: str) -> None:
    with transaction(engine) as session:
        row = _row(session, "poll", feed.key, "failing")
        row.status, row.last_run_at, row.last_error = "failing", utcnow(), error_name(error)
        session.add(row)
        record(session, query_entry(feed.resource_type, params, step=step, outcome=Outcome.MINOR_FAILURE))


def _later(first: str | None, second: str) -> str:
    return later(first, second) or second


def error_name(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}:{status}" if status else type(error).__name__


# --- the subscription manager

async def manage_subscriptions_once(
    engine: Engine, client: FhirClient, specs: Sequence[SubscriptionSpec], *, public_base_url: str,
    master_secret: bytes, keep_keys: Collection[str] = (),
) -> list[SubscriptionState]:
    """Makes the EHR's Subscriptions equal to ``specs`` (create, repair, re-activate ``error``/``off``,
    delete duplicates) and deletes stale ones: ours, for a key neither in ``specs`` nor in
    ``keep_keys`` (pass the Backport feeds' keys there). Records each spec's health; an EHR failure
    is recorded for every spec and re-raised."""
    try:
        states = await ensure_subscriptions(client, specs, public_base_url, master_secret)
        keep = {spec.key for spec in specs} | set(keep_keys)
        states += await delete_stale_subscriptions(client, keep, public_base_url)
    except FhirError as error:
        await asyncio.to_thread(_subscriptions_failed, engine, [spec.key for spec in specs], error_name(error))
        raise
    await asyncio.to_thread(_subscriptions_seen, engine, states)
    return states


async def check_subscriptions(engine: Engine, client: FhirClient, specs: Sequence[SubscriptionSpec], *,
                              public_base_url: str) -> list[SubscriptionState]:
    """Reads the Subscriptions' status without changing anything (when ``manage_subscriptions`` is
    off) and records it as their health."""
    try:
        states = await subscription_status(client, specs, public_base_url)
    except FhirError as error:
        await asyncio.to_thread(_subscriptions_failed, engine, [spec.key for spec in specs], error_name(error))
        raise
    await asyncio.to_thread(_subscriptions_seen, engine, states)
    return states


def _subscriptions_seen(engine: Engine, states: Sequence[SubscriptionState]) -> None:
    now = utcnow()
    with transaction(engine) as session:
        for state in states:
            if state.action in ("deleted-duplicate", "deleted-stale"):
                if state.action == "deleted-stale":
                    stale = session.get(FeedState, f"rest-hook:{state.key}"[:80])
                    if stale is not None:
                        session.delete(stale)
                continue
            row = _row(session, "rest-hook", state.key, state.status or "missing")
            row.status, row.fhir_id, row.last_run_at = state.status or "missing", state.fhir_id, now
            row.last_error = state.error[:200] if state.error else None
            if state.healthy:
                row.last_ok_at = now
            session.add(row)


def _subscriptions_failed(engine: Engine, keys: Sequence[str], error: str) -> None:
    now = utcnow()
    with transaction(engine) as session:
        for key in keys:
            row = _row(session, "rest-hook", key, "unknown")
            row.last_run_at, row.last_error = now, error
            session.add(row)


# --- health

@dataclass(frozen=True)
class FeedHealth:
    """One feed's health: ``kind`` ``rest-hook`` or ``poll``; ``status`` the Subscription's status
    (``active``, ``requested``, ``error``, ``off``, ``missing``) or the poll's (``ok``, ``failing``);
    ``last_event_at`` when the inbox last received a change from it; ``last_error`` an error class
    or the EHR's ``Subscription.error`` (never PHI, never a token)."""

    feed: str
    kind: str
    status: str
    healthy: bool
    last_event_at: datetime | None
    last_run_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    watermark: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("last_event_at", "last_run_at", "last_ok_at"):
            data[name] = data[name].isoformat() if data[name] is not None else None
        return data


def feed_health(engine: Engine, *, stale_after: timedelta | None = None,
                now: datetime | None = None) -> list[FeedHealth]:
    """Every feed the manager or the poller has seen, by feed key. A feed is healthy when its
    Subscription is ``active`` or its last poll succeeded, and (with ``stale_after``) its last
    successful run is not older than that."""
    now = now or utcnow()
    with Session(engine) as session:
        rows = list(session.exec(select(FeedState).order_by(col(FeedState.feed))))
        received = dict(session.exec(
            select(InboxEvent.subscription_key, func.max(InboxEvent.received_at))
            .group_by(col(InboxEvent.subscription_key))).all())
    report = []
    for row in rows:
        inbox_key = row.key if row.kind == "rest-hook" else f"poll:{row.key}"[:64]
        healthy = row.status in ("active", "ok")
        if stale_after is not None and (row.last_ok_at is None or now - row.last_ok_at > stale_after):
            healthy = False
        report.append(FeedHealth(f"{row.kind}:{row.key}", row.kind, row.status, healthy, received.get(inbox_key),
                                 row.last_run_at, row.last_ok_at, row.last_error, row.watermark))
    return report
