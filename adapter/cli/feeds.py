"""``bridge feeds``: the EHR event feeds' health, and a poll run by hand (:mod:`adapter.feeds.polling`).

``status`` reads what the service recorded (no EHR call): each feed's kind, status, last event,
last run and success, last error class. ``poll-now`` polls the configured feeds once (``feed_mode``
``polling`` or ``both``, or the ``subscriptions`` mode's reconcile), e.g. after an EHR outage, and
prints what it queued.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from adapter.cli.support import fail, migrated_engine, say, settings_or_exit

feeds_app = typer.Typer(help="EHR event feeds: health and polling.", no_args_is_help=True)


@feeds_app.callback()
def _group() -> None:
    """EHR event feeds: health and polling."""


@feeds_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per feed.")] = False,
) -> None:
    """Prints each feed's health; exits 1 when one is unhealthy (for monitoring scripts)."""
    from adapter.feeds.health import feed_health
    from adapter.feeds.runner import health_stale_after

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        report = feed_health(engine, stale_after=health_stale_after(settings))
    finally:
        engine.dispose()
    if not report:
        say(f"no feed has run yet (feed_mode={settings.feed_mode}); the service records them as it runs")
    for health in report:
        if as_json:
            say(json.dumps(health.as_dict(), sort_keys=True))
            continue
        when = health.last_event_at.isoformat(timespec="seconds") if health.last_event_at else "never"
        ran = health.last_ok_at.isoformat(timespec="seconds") if health.last_ok_at else "never"
        say(f"{health.feed}\t{health.status}\t{'healthy' if health.healthy else 'UNHEALTHY'}\t"
            f"last event {when}\tlast success {ran}\t{health.last_error or ''}".rstrip())
    if any(not health.healthy for health in report):
        raise typer.Exit(1)


@feeds_app.command("poll-now")
def poll_now() -> None:
    """Polls the configured feeds once and prints, per feed, what was found and queued."""
    from datetime import timedelta

    from adapter.feeds.polling import poll_once
    from adapter.feeds.runner import feeds_from_settings
    from adapter.service import make_fhir_client
    from ehr.subscriptions import DEFAULT_SUBSCRIPTION_SPECS

    settings = settings_or_exit()
    feeds = feeds_from_settings(settings, DEFAULT_SUBSCRIPTION_SPECS)
    if not feeds:
        raise fail("feed_mode=subscriptions with reconcile_interval_seconds=0 polls nothing: set "
                   "BRIDGE_RECONCILE_INTERVAL_SECONDS (e.g. 300), or BRIDGE_FEED_MODE=both or polling")
    engine = migrated_engine(settings)

    async def run() -> list[str]:
        async with make_fhir_client(settings) as client:
            outcomes = await poll_once(engine, client, feeds,
                                       safety_lag=timedelta(seconds=settings.poll_safety_lag_seconds),
                                       page_size=settings.poll_page_size,
                                       max_lookback=timedelta(hours=settings.catchup_max_hours))
        return [f"{o.key}\t{o.status}\tfound {o.found}\tqueued {o.new}\t"
                f"{o.error or ('more pages: run again' if o.more else '')}".rstrip() for o in outcomes]

    try:
        lines = asyncio.run(run())
    finally:
        engine.dispose()
    for line in lines:
        say(line)
    if any("\tfailed\t" in line for line in lines):
        raise typer.Exit(1)
