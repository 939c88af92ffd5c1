"""The start-up chores a running service retries until they succeed, beside the pipeline: making the
EHR's Subscriptions equal to the ``feed_mode`` (with ``polling``, none: ours are deleted at once) and
reading the templates' review states from the WABA; and, for as long as the service runs, its
heartbeat (:func:`keep_alive`). While the EHR or Meta
is unreachable each tries again every :data:`SUBSCRIPTION_RETRY`, recording the last error for the
health report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from adapter.feeds.polling import manage_subscriptions_once, subscribed_specs
from adapter.feeds.tasks import backport_specs
from adapter.outbox.template_sync import read_states
from adapter.service import Service
from ehr.errors import FhirError
from whatsapp.errors import WhatsAppError

log = logging.getLogger(__name__)
SUBSCRIPTION_RETRY = timedelta(seconds=30)


async def keep_subscriptions(service: Service, stop_event: asyncio.Event) -> None:
    """Creates or verifies the EHR Subscriptions the ``feed_mode`` wants, and deletes ours it does not
    (all of them with ``polling``: none is ever created first); while the EHR is unreachable, tries again."""
    fhir = service.fhir
    assert fhir is not None
    settings = service.settings
    wanted = subscribed_specs(settings.feed_mode, list(service.specs.values()))

    async def ensure() -> None:
        states = await manage_subscriptions_once(
            service.engine, fhir, wanted, public_base_url=settings.public_base_url,
            master_secret=settings.ehr_hook_secret.get_secret_value().encode(),
            keep_keys=[spec.key for spec in backport_specs(settings)])
        service.subscriptions = [state for state in states if state.action != "deleted-stale"]

    def note(error: str | None) -> None:
        service.subscription_error = error

    await _until_done(ensure, FhirError, note, "ensure EHR subscriptions", stop_event)


async def keep_template_states(service: Service, stop_event: asyncio.Event) -> None:
    """Reads the templates' review states from the WABA; while Meta is unreachable, tries again."""
    async def read() -> None:
        count = await read_states(service.settings, service.engine)
        log.info("read the review state of %d templates", count)

    def note(error: str | None) -> None:
        service.template_sync_error = error

    await _until_done(read, WhatsAppError, note, "read template states", stop_event)


async def keep_alive(service: Service, stop_event: asyncio.Event) -> None:
    """This instance's heartbeat, and the release of dead instances' leases (:mod:`adapter.ops.liveness`),
    every ``heartbeat_seconds``; a database outage is logged and tried again on the next beat."""
    liveness = service.liveness
    if liveness is None:
        return
    # A thread of its own: a heartbeat must not queue behind the pipeline's work in the shared pool.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeat") as beater:
        while not stop_event.is_set():
            try:
                await asyncio.get_running_loop().run_in_executor(beater, liveness.beat)
            except SQLAlchemyError as error:
                log.warning("heartbeat failed (%s); trying again", type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), liveness.config.heartbeat.total_seconds())


async def _until_done(attempt: Callable[[], Awaitable[None]], retried: type[Exception],
                      note: Callable[[str | None], None], what: str, stop_event: asyncio.Event) -> None:
    """Runs ``attempt`` until it succeeds or the service stops; ``note`` keeps the last error for ``/health``."""
    while not stop_event.is_set():
        try:
            await attempt()
            note(None)
            return
        except retried as error:
            note(f"{type(error).__name__}: {error}")
            log.warning("could not %s (%s); retrying in %ss", what, type(error).__name__,
                        int(SUBSCRIPTION_RETRY.total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), SUBSCRIPTION_RETRY.total_seconds())
