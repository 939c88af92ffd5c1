"""The start-up chores a running service retries until they succeed, beside the pipeline: ensuring
the EHR Subscriptions and reading the templates' review states from the WABA. While the EHR or Meta
is unreachable each tries again every :data:`SUBSCRIPTION_RETRY`, recording the last error for the
health report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from adapter.outbox.template_sync import read_states
from adapter.service import Service
from ehr.errors import FhirError
from ehr.subscriptions import ensure_subscriptions
from whatsapp.errors import WhatsAppError

log = logging.getLogger(__name__)
SUBSCRIPTION_RETRY = timedelta(seconds=30)


async def keep_subscriptions(service: Service, stop_event: asyncio.Event) -> None:
    """Creates or verifies the EHR Subscriptions; while the EHR is unreachable, tries again."""
    fhir = service.fhir
    assert fhir is not None

    async def ensure() -> None:
        service.subscriptions = await ensure_subscriptions(
            fhir, list(service.specs.values()), service.settings.public_base_url,
            service.settings.ehr_hook_secret.get_secret_value().encode())

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
