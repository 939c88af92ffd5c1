"""The HL7 v2 feed inside ``bridge serve``: the MLLP listener (:class:`ehr.hl7.listener.MllpListener`,
TLS when configured) storing through :class:`adapter.feeds.hl7_store.Hl7MessageStore`, and the loop
that decides what it stored (:class:`adapter.hl7.processor.Hl7Processor`): at once after a
store, else every ``tick_seconds``. Messages queued wake the pipeline's sender, as FHIR events do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING

from adapter.feeds.hl7_store import Hl7MessageStore
from adapter.hl7.processor import Hl7Processor
from adapter.settings import Settings
from adapter.settings.hl7 import load_hl7_mapping
from ehr.hl7.listener import MllpListener

if TYPE_CHECKING:
    from adapter.service import Service

log = logging.getLogger(__name__)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server context for MLLP over TLS (TLS 1.2 or later) when both PEM files are set."""
    if settings.hl7_tls_cert_file is None or settings.hl7_tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.hl7_tls_cert_file, settings.hl7_tls_key_file)
    return context


async def start_hl7_feed(service: Service, stop_event: asyncio.Event) -> asyncio.Task[None]:
    """Binds the listener (a port in use fails the start-up) and returns the task that decides stored
    messages until ``stop_event``, then closes the listener."""
    settings = service.settings
    config = load_hl7_mapping(settings.hl7_mapping_file)
    wake = asyncio.Event()
    by_identifier = settings.hl7_patient_source == "fhir"
    store = Hl7MessageStore(service.engine, service.cipher, on_stored=wake.set, patient_by_identifier=by_identifier)
    pipeline = service.pipeline
    processor = Hl7Processor(service.engine, service.cipher, config, service.decider,
                             patient_source=settings.hl7_patient_source, fhir=service.fhir,
                             on_queued=pipeline.wake if pipeline is not None else None)
    listener = MllpListener(store, config, host=settings.hl7_listen_host, port=settings.hl7_listen_port,
                            ssl_context=tls_context(settings), store_timeout=settings.hl7_store_timeout_seconds)
    await listener.start()
    return asyncio.create_task(_process(processor, listener, wake, stop_event, settings.tick_seconds), name="hl7")


async def _process(processor: Hl7Processor, listener: MllpListener, wake: asyncio.Event, stop_event: asyncio.Event,
                   tick_seconds: float) -> None:
    try:
        while not stop_event.is_set():
            try:
                worked = await processor.run_once()
            except Exception:  # a database outage must not end the feed: the next tick tries again
                log.exception("HL7 processing tick failed")
                worked = 0
            if worked:
                continue
            wake.clear()
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop_event.wait())]
            await asyncio.wait(waiters, timeout=tick_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
    finally:
        with contextlib.suppress(Exception):
            await listener.close()
