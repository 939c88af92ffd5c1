"""The EHR event feeds: which are configured, one polling round, the subscription manager, health.

``feed_mode`` (settings) picks the feeds: ``subscriptions`` (classic R4 rest-hook,
https://hl7.org/fhir/R4/subscription.html, plus a low-rate polling reconcile unless it is turned
off), ``polling`` (``_lastUpdated`` searches, :mod:`ehr.polling`) or ``both`` (rest-hook plus a
polling reconcile at the poll interval). A rest-hook cannot report what it failed to deliver, e.g.
while the bridge was down: the reconcile, whose first round runs at start-up, fetches it from the
durable cursor. Either way the default Appointment feed has the criteria ``Appointment``: every
change, so cancellations, reschedules and no-shows done in the EHR arrive as events too (a classic
``status=booked`` criterion never reports them) and the rule engine (:mod:`adapter.scheduling.decide`)
acts on the status transition.

- :func:`poll_once` polls every feed once, page by page: each page's changes go into the inbox
  with the search's audit entry and the new watermark in ONE transaction (DESIGN.md: audit in the
  step's transaction). It is a plain function: with several instances the caller runs it under
  the leader lock.
- :func:`manage_subscriptions_once` makes the EHR's Subscriptions equal to the configuration
  (create, re-activate, delete stale) and records each one's health.
- :func:`drop_unpolled` forgets the cursor of a feed no longer polled.
- :func:`adapter.feeds.health.feed_health` reports each feed for ``/health`` and ``bridge feeds status``.
- :class:`adapter.feeds.runner.FeedRunner` ticks both on their intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select

from adapter.audit.fhir_access import query_entry
from adapter.audit.trail import Outcome, record
from adapter.feeds.inbox import dedupe_key
from adapter.feeds.tables import FeedState, InboxEvent, ResourceState
from adapter.storage.db import insert_ignoring_duplicates, transaction, utcnow
from ehr.client import DEFAULT_MAX_PAGES, FhirClient
from ehr.errors import FhirError
from ehr.polling import (
    DEFAULT_PAGE_SIZE,
    PollFeed,
    PollResult,
    format_instant,
    later,
    parse_instant,
    poll_pages,
    poll_params,
    poll_since,
    server_now,
    start_point,
)
from ehr.subscriptions import (
    SubscriptionSpec,
    SubscriptionState,
    delete_stale_subscriptions,
    ensure_subscriptions,
    subscription_status,
)

FeedMode = Literal["subscriptions", "polling", "both"]
DEFAULT_MAX_LOOKBACK = timedelta(hours=72)
log = logging.getLogger(__name__)


def subscribed_specs(mode: FeedMode, specs: Sequence[SubscriptionSpec]) -> list[SubscriptionSpec]:
    """The Subscriptions the EHR should hold: all specs unless ``mode`` is ``polling`` (then none,
    and the manager deletes ours)."""
    return [] if mode == "polling" else list(specs)


def polled_feeds(mode: FeedMode, specs: Sequence[SubscriptionSpec], *, reconcile: bool = False) -> list[PollFeed]:
    """The feeds to poll: one per spec in ``polling`` and ``both`` modes, and in ``subscriptions``
    mode when ``reconcile`` is on (settings: ``reconcile_interval_seconds`` > 0)."""
    if mode == "subscriptions" and not reconcile:
        return []
    return [PollFeed(spec.key, spec.criteria) for spec in specs]


@dataclass(frozen=True)
class PollOutcome:
    """One feed's poll: ``status`` ``started`` (first poll, nothing processed before: the EHR's clock
    noted, nothing queued), ``ok`` or ``failed`` (``error`` is the error class); ``found`` and ``new``
    how many changes were read and queued; ``more`` when the round stopped at its page limit with
    pages left (the caller polls again soon)."""

    key: str
    status: Literal["started", "ok", "failed"]
    found: int = 0
    new: int = 0
    error: str | None = None
    more: bool = False


async def poll_once(engine: Engine, client: FhirClient, feeds: Sequence[PollFeed], *, safety_lag: timedelta,
                    page_size: int = DEFAULT_PAGE_SIZE, on_new: Callable[[], None] | None = None,
                    max_lookback: timedelta = DEFAULT_MAX_LOOKBACK,
                    max_pages: int = DEFAULT_MAX_PAGES) -> list[PollOutcome]:
    """Polls each feed once (Subscriptions Backport IG's advice for missed notifications is the same
    query: https://hl7.org/fhir/uv/subscriptions-backport/errors.html), at most ``max_pages`` pages
    per feed, never further back than ``max_lookback``. Never raises for an EHR failure: it is
    recorded in the feed's health and the watermark stays where the last stored page left it, so
    the next poll retries. ``on_new`` is called when something was queued (``Pipeline.wake_inward``)."""
    outcomes: list[PollOutcome] = []
    for feed in feeds:
        outcome = await _poll_feed(engine, client, feed, safety_lag, page_size, max_lookback, max_pages)
        if outcome.status == "failed":
            log.warning("polling %s failed (%s); the next poll retries from the same watermark", feed.key,
                        outcome.error)
        outcomes.append(outcome)
    if on_new is not None and any(outcome.new for outcome in outcomes):
        on_new()
    return outcomes


async def _poll_feed(engine: Engine, client: FhirClient, feed: PollFeed, safety_lag: timedelta,
                     page_size: int, max_lookback: timedelta, max_pages: int) -> PollOutcome:
    state = await asyncio.to_thread(_load, engine, f"poll:{feed.key}")
    if state is None or state.watermark is None:
        start_params = [("_sort", "-_lastUpdated"), ("_count", "1")]
        try:
            now = await server_now(client, feed)
        except FhirError as error:
            await asyncio.to_thread(_failed, engine, feed, start_params, error, "poll-start")
            return PollOutcome(feed.key, "failed", error=error_name(error))
        last = await asyncio.to_thread(_last_processed, engine, feed.resource_type)
        since = start_point(now, last, safety_lag, max_lookback)
        await asyncio.to_thread(_started, engine, feed, since or now, start_params)
        if since is None:
            return PollOutcome(feed.key, "started")
        log.info("polling %s: no cursor yet, catching up from the last change processed", feed.key)
    else:
        since = poll_since(state.watermark, state.start_at, safety_lag)
        floor = utcnow() - max_lookback  # our clock: the bound is hours, not seconds
        if parse_instant(since) < floor:
            since = format_instant(floor)
            log.warning("polling %s: the cursor is older than the catch-up limit; changes before %s are not "
                        "fetched", feed.key, since)
            await asyncio.to_thread(_moved, engine, feed, since)
    found = new = pages = 0
    try:
        async with contextlib.aclosing(poll_pages(client, feed, since, page_size=page_size)) as results:
            async for page in results:
                new += await asyncio.to_thread(_stored, engine, page)
                found, pages = found + len(page.changes), pages + 1
                if page.more and pages >= max_pages:
                    return PollOutcome(feed.key, "ok", found, new, more=True)
    except FhirError as error:
        await asyncio.to_thread(_failed, engine, feed, poll_params(feed, since, page_size), error, "poll")
        return PollOutcome(feed.key, "failed", found, new, error=error_name(error))
    return PollOutcome(feed.key, "ok", found, new)


def drop_unpolled(engine: Engine, feeds: Sequence[PollFeed]) -> None:
    """Deletes the polling state (cursor, health) of feeds no longer polled (the reconcile turned off,
    ``feed_mode`` changed), so health does not report them stale and, if polling comes back, it
    starts again from the last change processed (:func:`ehr.polling.start_point`), not from an old cursor."""
    keep = [f"poll:{feed.key}"[:80] for feed in feeds]
    with transaction(engine) as session:
        session.exec(delete(FeedState).where(col(FeedState.kind) == "poll", col(FeedState.feed).not_in(keep)))


def _load(engine: Engine, feed: str) -> FeedState | None:
    with Session(engine) as session:
        return session.get(FeedState, feed)


def _last_processed(engine: Engine, resource_type: str) -> str | None:
    """The newest ``meta.lastUpdated`` among the processed resources of this type (the last processed
    moment), for a feed that has no cursor yet."""
    with Session(engine) as session:
        return session.exec(select(func.max(ResourceState.last_updated))
                            .where(col(ResourceState.resource_type) == resource_type)).one()


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


def _moved(engine: Engine, feed: PollFeed, start: str) -> None:
    """Moves a cursor older than the catch-up limit up to it, so the limit is reported once."""
    with transaction(engine) as session:
        row = _row(session, "poll", feed.key, "ok")
        row.watermark, row.start_at = start, start
        session.add(row)


def _stored(engine: Engine, result: PollResult) -> int:
    """One page's changes into the inbox (deduped on type/id/version), the audit entry and the
    watermark, in one transaction: a crash leaves either all of them or none (and the page is
    read again)."""
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
