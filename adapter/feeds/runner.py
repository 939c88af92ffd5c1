"""The event-feed runner: ticks the polling round (:func:`adapter.feeds.polling.poll_once`) every
poll interval and the subscription manager (:func:`adapter.feeds.polling.manage_subscriptions_once`)
every ``feed_check_interval_seconds``, on the leader instance only when several share PostgreSQL.
The first polling round runs at the runner's first tick: the catch-up at start-up, from the
durable cursor, of what the EHR failed to deliver while the bridge was down.

:func:`runner_from_settings` composes it from the settings (``feed_mode``, intervals, lag, page size);
:func:`poll_interval` is the polling period a ``feed_mode`` implies (``reconcile_interval_seconds``
in ``subscriptions`` mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from adapter.feeds.polling import (
    DEFAULT_MAX_LOOKBACK,
    check_subscriptions,
    drop_unpolled,
    error_name,
    manage_subscriptions_once,
    poll_once,
    polled_feeds,
    subscribed_specs,
)
from adapter.settings import Settings
from ehr.client import DEFAULT_MAX_PAGES, FhirClient
from ehr.errors import FhirError
from ehr.polling import DEFAULT_PAGE_SIZE, PollFeed
from ehr.subscriptions import SubscriptionSpec

log = logging.getLogger(__name__)


@dataclass
class FeedRunner:
    """Ticks the polling round every ``poll_interval`` and the subscription manager every
    ``check_interval``. ``is_leader`` (e.g. ``Leadership.is_leader``, adapter.ops.instances) makes only one
    instance run them; ``on_new`` wakes the pipeline. ``manage`` runs the manager (``None``: no
    Subscriptions wanted, e.g. ``feed_mode=polling`` with ``manage_subscriptions`` off)."""

    engine: Engine
    client: FhirClient
    feeds: Sequence[PollFeed]
    safety_lag: timedelta
    poll_interval: timedelta
    check_interval: timedelta
    manage: Callable[[], Awaitable[Any]] | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    max_lookback: timedelta = DEFAULT_MAX_LOOKBACK
    max_pages: int = DEFAULT_MAX_PAGES  # per feed and round: a long catch-up goes on at the next tick
    on_new: Callable[[], None] | None = None
    is_leader: Callable[[], bool] | None = None

    async def tick(self, now: float, due: dict[str, float]) -> None:
        """Runs what is due at monotonic time ``now``; ``due`` holds the next due times."""
        if self.is_leader is not None and not await asyncio.to_thread(self.is_leader):
            return
        if self.manage is not None and now >= due.get("manage", 0.0):
            due["manage"] = now + self.check_interval.total_seconds()
            await asyncio.to_thread(drop_unpolled, self.engine, self.feeds)
            try:
                await self.manage()
            except FhirError as error:
                log.warning("subscription manager: EHR call failed (%s); retried next check", error_name(error))
        if self.feeds and now >= due.get("poll", 0.0):
            due["poll"] = now + self.poll_interval.total_seconds()
            outcomes = await poll_once(self.engine, self.client, self.feeds, safety_lag=self.safety_lag,
                                       page_size=self.page_size, on_new=self.on_new, max_lookback=self.max_lookback,
                                       max_pages=self.max_pages)
            if any(outcome.more for outcome in outcomes):
                due["poll"] = now  # pages left: the next tick goes on, a bounded set of pages at a time

    async def run(self, stop: asyncio.Event, *, manage_now: bool = True) -> None:
        """``manage_now=False`` when the start-up already ensured the Subscriptions
        (:func:`adapter.runtime.keep_subscriptions`): two managers racing would create duplicates."""
        loop = asyncio.get_running_loop()
        due: dict[str, float] = {} if manage_now else {"manage": loop.time() + self.check_interval.total_seconds()}
        step = min(self.poll_interval, self.check_interval).total_seconds()
        while not stop.is_set():
            try:
                await self.tick(loop.time(), due)
            except Exception:
                log.exception("event feed tick failed")  # a database outage must not end the loop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(step, 5.0))


def poll_interval(settings: Settings) -> float | None:
    """Seconds between two polling rounds: ``poll_interval_seconds`` in ``polling`` and ``both`` modes,
    ``reconcile_interval_seconds`` in ``subscriptions`` mode; ``None`` when nothing is polled (the
    reconcile turned off)."""
    if settings.feed_mode == "subscriptions":
        return settings.reconcile_interval_seconds or None
    return settings.poll_interval_seconds


def feeds_from_settings(settings: Settings, specs: Sequence[SubscriptionSpec]) -> list[PollFeed]:
    """The feeds polled under ``settings`` (reconcile feeds included)."""
    return polled_feeds(settings.feed_mode, specs, reconcile=poll_interval(settings) is not None)


def runner_from_settings(settings: Settings, engine: Engine, client: FhirClient, specs: Sequence[SubscriptionSpec],
                         *, on_new: Callable[[], None] | None = None, is_leader: Callable[[], bool] | None = None,
                         keep_keys: Collection[str] = ()) -> FeedRunner:
    """The runner for ``settings``: polled feeds by ``feed_mode`` (and the reconcile); the manager keeps
    the EHR's Subscriptions equal to the wanted ones when ``manage_subscriptions`` is on, else only
    reads their status for health. ``keep_keys``: other feeds' keys (Backport) the manager must not
    delete."""
    wanted = subscribed_specs(settings.feed_mode, specs)
    secret = settings.ehr_hook_secret.get_secret_value().encode()

    async def manage() -> None:
        if settings.manage_subscriptions:
            await manage_subscriptions_once(engine, client, wanted, public_base_url=settings.public_base_url,
                                            master_secret=secret, keep_keys=keep_keys)
        elif wanted:
            await check_subscriptions(engine, client, wanted, public_base_url=settings.public_base_url)

    interval = poll_interval(settings) or settings.feed_check_interval_seconds  # unused when nothing is polled
    return FeedRunner(engine, client, feeds_from_settings(settings, specs),
                      safety_lag=timedelta(seconds=settings.poll_safety_lag_seconds),
                      poll_interval=timedelta(seconds=interval),
                      check_interval=timedelta(seconds=settings.feed_check_interval_seconds),
                      manage=manage, page_size=settings.poll_page_size,
                      max_lookback=timedelta(hours=settings.catchup_max_hours), on_new=on_new, is_leader=is_leader)


def health_stale_after(settings: Settings) -> timedelta:
    """How old a feed's last success may be before health calls it unhealthy: three missed runs."""
    return timedelta(seconds=3 * max(poll_interval(settings) or 0.0, settings.feed_check_interval_seconds))
