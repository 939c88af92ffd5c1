"""The event feeds a running service keeps, besides the classic Subscriptions ensured at start-up
(:func:`adapter.runtime.keep_subscriptions`): R4 Backport topic subscriptions and their monitor
(handshakes, event numbers, heartbeats, ``$status``, re-sync), the polling reconcile (its first
round at start-up: the catch-up) and the periodic subscription manager (:mod:`adapter.feeds.runner`,
leader only), and their health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from adapter.feeds.backport_monitor import BackportFeedConfig, BackportFeedMonitor
from adapter.feeds.backport_monitor import feed_health as backport_feed_health
from adapter.feeds.health import feed_health as polled_feed_health
from adapter.feeds.runner import health_stale_after, runner_from_settings
from adapter.settings import Settings
from ehr.backport import BackportSpec
from ehr.client import FhirClient
from ehr.errors import FhirError
from ehr.subscriptions import SubscriptionSpec

log = logging.getLogger(__name__)
BACKPORT_TICK_SECONDS = 5.0  # heartbeats and gap grace periods are tens of seconds


def backport_specs(settings: Settings) -> list[BackportSpec]:
    """One :class:`BackportSpec` per ``backport_topics`` entry, keyed ``bp-{type}`` (``bp-appointment``)."""
    return [BackportSpec(f"bp-{resource_type.lower()}"[:63], topic, resource_type, settings.backport_payload,
                         settings.backport_heartbeat_seconds, settings.backport_timeout_seconds,
                         settings.backport_max_count)
            for resource_type, topic in sorted(settings.backport_topics.items())]


def backport_config(settings: Settings) -> BackportFeedConfig:
    return BackportFeedConfig(gap_detection=settings.backport_gap_detection,
                              gap_grace=timedelta(seconds=settings.backport_gap_grace_seconds),
                              resync_margin=timedelta(seconds=settings.backport_resync_margin_seconds))


def ping_specs(settings: Settings) -> dict[str, SubscriptionSpec]:
    """What the pipeline searches when a Backport notification names no resource (``empty`` payload)."""
    return {spec.key: SubscriptionSpec(spec.key, spec.resource_type, "empty") for spec in backport_specs(settings)}


def backport_monitor(settings: Settings, engine: Engine, fhir: FhirClient,
                     on_stored: Callable[[], None] | None) -> BackportFeedMonitor | None:
    specs = backport_specs(settings)
    if not specs:
        return None
    return BackportFeedMonitor(engine, fhir, specs, backport_config(settings),
                               public_base_url=settings.public_base_url,
                               master_secret=settings.ehr_hook_secret.get_secret_value().encode(),
                               on_stored=on_stored)


async def keep_backport(monitor: BackportFeedMonitor, manage: bool, stop: asyncio.Event) -> None:
    """Ensures the topic subscriptions (when managing them), then watches them every few seconds. Each
    feed is leased to one instance at a time, so every instance may run this."""
    ensured = not manage
    while not stop.is_set():
        try:
            if not ensured:
                await monitor.ensure()
                ensured = True
            await monitor.run_once()
        except FhirError as error:
            log.warning("Backport feeds: EHR call failed (%s); retrying", type(error).__name__)
        except Exception:
            log.exception("Backport feed tick failed")  # a database outage must not end the loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BACKPORT_TICK_SECONDS)


async def keep_feeds(settings: Settings, engine: Engine, fhir: FhirClient, specs: list[SubscriptionSpec],
                     stop: asyncio.Event, *, on_new: Callable[[], None] | None,
                     is_leader: Callable[[], bool] | None) -> None:
    """The polling reconcile (first round at once: the catch-up since the durable cursor) and the
    periodic subscription manager, on the leader only."""
    runner = runner_from_settings(settings, engine, fhir, specs, on_new=on_new, is_leader=is_leader,
                                  keep_keys=[spec.key for spec in backport_specs(settings)])
    await runner.run(stop, manage_now=False)


def feeds_health(settings: Settings, engine: Engine) -> dict[str, Any]:
    return {"polled_or_managed": [item.as_dict() for item in polled_feed_health(
                engine, stale_after=health_stale_after(settings))],
            "backport": backport_feed_health(engine)}
