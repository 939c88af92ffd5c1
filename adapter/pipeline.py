"""The pipeline loop: inbox → decide → outbox → dispatch (and stored statuses → outbox, stored
inbound messages → consent and contacts), ticking on the database's clock.

The database holds all state (DESIGN.md: "the database is the clock"); this loop only wakes up —
at once when the intake stored something, otherwise every ``tick_seconds`` — claims due work and
hands it on. A restart loses nothing: unclaimed rows wait, leased rows return when their lease
expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from adapter.audit.fhir_access import query_entry
from adapter.audit.trail import AuditEntry, record
from adapter.conversation.actions import ActionRunner
from adapter.conversation.inbound import InboundProcessor
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import FeedWatermark, InboxEvent
from adapter.maintenance.housekeeping import Housekeeping
from adapter.ops.logs import traced
from adapter.outbox.dispatch import Dispatcher
from adapter.outbox.fallback_hook import FallbackHook
from adapter.outbox.statuses import apply_pending
from adapter.scheduling.decide import Decider
from adapter.scheduling.decision import DecideItem, Decision, state_key, version_of
from adapter.storage.db import transaction, utcnow
from ehr.client import FhirClient
from ehr.errors import FhirError, FhirNotFoundError
from ehr.notifications import IncomingNotification
from ehr.patient import patient_reference
from ehr.related import RelatedReader
from ehr.subscriptions import SubscriptionSpec

log = logging.getLogger(__name__)
PING_LOOKBACK = timedelta(hours=1)
STATUS_BATCH = 200  # short transactions: a webhook's insert may wait on a status row being applied
INBOX_MAX_ATTEMPTS = 20


class Pipeline:
    def __init__(self, engine: Engine, inbox: InboxStore, decider: Decider, fhir: FhirClient,
                 dispatcher: Dispatcher, specs: Mapping[str, SubscriptionSpec], *, tick_seconds: float,
                 inbox_batch: int = 100, concurrency: int = 16, inbound: InboundProcessor | None = None,
                 hook: FallbackHook | None = None, actions: ActionRunner | None = None,
                 housekeeping: Housekeeping | None = None) -> None:
        self.engine = engine
        self.inbox = inbox
        self.decider = decider
        self.fhir = fhir
        self.dispatcher = dispatcher
        self.related = RelatedReader(fhir)
        self.specs = specs
        self.inbound = inbound
        self.hook = hook
        self.actions = actions
        self.housekeeping = housekeeping
        self.tick_seconds = tick_seconds
        self.inbox_batch = inbox_batch
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._wake_out = asyncio.Event()
        self._wake_house = asyncio.Event()  # never set: housekeeping runs on the tick
        self._queued = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- waking up (thread-safe: the intake runs in a worker thread)

    def wake(self) -> None:
        """Look at everything at once (thread-safe), e.g. after queuing a message from outside."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
            self._loop.call_soon_threadsafe(self._wake_out.set)

    def wake_inward(self) -> None:
        """An EHR event or a webhook was stored (thread-safe). Messages it leads to wake the outward
        loop after the inward batch, so sends go out in batches rather than one by one."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def accept(self, items: list[IncomingNotification]) -> int:
        """The intake's sink: store durably, then wake the loop."""
        stored = self.inbox.accept(items)
        if stored:
            self.wake_inward()
        return stored

    async def run(self, stop: asyncio.Event) -> None:
        """Two loops over the same wake-up: what comes in (EHR events, statuses, patients' messages)
        and what goes out (sends, which wait on the rate limiter, and the fallback hook), so a slow
        send never holds up reading the inbox; and a third, on the tick, for housekeeping (audit
        chaining and checkpoints, retention)."""
        self._loop = asyncio.get_running_loop()
        loops = [self._repeat(self._inward, self._wake, stop, "inward"),
                 self._repeat(self._outward, self._wake_out, stop, "outward")]
        if self.housekeeping is not None:
            loops.append(self._repeat(self.housekeeping.run_once, self._wake_house, stop, "housekeeping"))
        await asyncio.gather(*loops)

    async def _inward(self) -> int:
        worked = await self.process_inbox_once()
        worked += await asyncio.to_thread(apply_pending, self.engine, STATUS_BATCH, self.dispatcher.policy)
        if self.inbound is not None:
            processed = await asyncio.to_thread(self.inbound.process_pending)
            self._queued = self._queued or processed > 0  # a confirmation may be due
            worked += processed
        if self.actions is not None:  # taps that need the EHR: confirm, cancel, reschedule, hand-off
            performed = await self.actions.run_once()
            self._queued = self._queued or performed > 0
            worked += performed
        if self._queued:
            self._queued = False
            self._wake_out.set()
        return worked

    async def _outward(self) -> int:
        worked = await self.dispatcher.run_once()
        if self.hook is not None:
            worked += await self.hook.run_once()
        return worked

    async def _repeat(self, step: Callable[[], Awaitable[int]], wake: asyncio.Event, stop: asyncio.Event,
                      name: str) -> None:
        while not stop.is_set():
            try:
                worked = await step()
            except Exception:
                # A bug or a database outage must not kill the loop; it retries next tick.
                log.exception("pipeline %s tick failed", name)
                worked = 0
            if worked:
                continue
            wake.clear()
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self.tick_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    # --- inbox

    async def process_inbox_once(self) -> int:
        """Claims a batch of EHR events, re-reads their resources concurrently and decides them all in
        one transaction (:meth:`adapter.scheduling.decide.Decider.record_batch`)."""
        events = await asyncio.to_thread(self.inbox.claim, self.inbox_batch)
        references = [event for event in events if event.kind != "ping"]
        for ping in (event for event in events if event.kind == "ping"):
            await self._guarded(ping, self._handle_ping(ping))
        if references:
            reads = await asyncio.gather(*(self._guarded(event, self._read_event(event)) for event in references))
            found = [(resource, event.id) for event, resource in zip(references, reads, strict=True)
                     if isinstance(resource, dict)]
            gone = [event.id or 0 for event, resource in zip(references, reads, strict=True) if resource is None]
            await self._decide_all(found, gone)
        return len(events)

    async def _guarded(self, event: InboxEvent, step: Awaitable[Any]) -> Any:
        """Runs one event's EHR work; a failure sends that event (only) back for a later retry, and
        returns ``False`` for it."""
        try:
            return await step
        except FhirError as error:
            delay = timedelta(seconds=min(300, 2 ** min(event.attempts, 8)))
            log.warning("inbox event %s: EHR call failed (%s), retry in %ss", event.id,
                        type(error).__name__, int(delay.total_seconds()))
            await asyncio.to_thread(self.inbox.retry_later, event.id or 0, type(error).__name__, delay,
                                    INBOX_MAX_ATTEMPTS)
        except Exception as error:
            log.exception("inbox event %s failed", event.id)
            await asyncio.to_thread(self.inbox.retry_later, event.id or 0, type(error).__name__,
                                    timedelta(seconds=60), INBOX_MAX_ATTEMPTS)
        return False

    async def _read_event(self, event: InboxEvent) -> dict[str, Any] | None:
        try:
            async with self._slots:
                return await self.fhir.read(str(event.resource_type), str(event.resource_id))
        except FhirNotFoundError:
            return None  # deleted since: nothing to tell anyone

    async def handle_resource(self, resource: dict[str, Any], inbox_event_id: int | None = None) -> Decision:
        """Acts on the current version of a resource read from the EHR."""
        return (await self._decide_all([(resource, inbox_event_id)]))[0]

    async def _decide_all(self, found: list[tuple[dict[str, Any], int | None]],
                          gone: Sequence[int] = ()) -> list[Decision]:
        """Decides a batch of current versions: one read of what was processed before, the Patients
        (and the resources they reference) read concurrently only where a rule fires, then one
        transaction for all. If that transaction fails, each version is tried alone, so one bad
        version cannot hold up the rest; its event comes back later."""
        if not found and not gone:
            return []
        seen = await asyncio.to_thread(self.decider.last_seen_many, [resource for resource, _ in found])
        prepared = await asyncio.gather(*(self._prepare(resource, event_id, seen) for resource, event_id in found))
        items = [item for item in prepared if item is not None]
        try:
            decisions = await asyncio.to_thread(self.decider.record_batch, items, list(gone))
        except Exception:
            if all(item.inbox_event_id is None for item in items):
                raise  # a ping's results or a direct call: the caller retries
            decisions = await self._decide_each(items, gone)
        for decision in decisions:  # the decide step of each notification's journey (adapter.ops.logs)
            with traced(decision.resource_ref):
                log.info("decided: %d queued, %d skipped%s", len(decision.queued), len(decision.skipped),
                         " (a version already processed)" if decision.duplicate else "")
        if any(decision.queued for decision in decisions):
            self._queued = True  # the outward loop is woken after this inward batch
        return decisions

    async def _decide_each(self, items: list[DecideItem], gone: Sequence[int]) -> list[Decision]:
        """The batch failed: each version alone, so one that fails cannot hold up the rest; its event
        is tried again later."""
        log.warning("a decide batch of %d failed; deciding each alone", len(items))
        decisions: list[Decision] = []
        if gone:
            await asyncio.to_thread(self.decider.record_batch, [], list(gone))
        for item in items:
            try:
                decisions.extend(await asyncio.to_thread(self.decider.record_batch, [item]))
            except Exception as error:
                log.exception("inbox event %s failed", item.inbox_event_id)
                await asyncio.to_thread(self.inbox.retry_later, item.inbox_event_id or 0, type(error).__name__,
                                        timedelta(seconds=60), INBOX_MAX_ATTEMPTS)
        return decisions

    async def _prepare(self, resource: dict[str, Any], event_id: int | None,
                       seen: Mapping[tuple[str, str], tuple[str | None, str | None]]) -> DecideItem | None:
        seen_version, previous_status = seen.get(state_key(resource), (None, None))
        if seen_version is not None and seen_version == version_of(resource):
            return DecideItem(resource, None, event_id)  # a duplicate: audited and finished, nothing else
        if not self.decider.firing_rules(resource, previous_status):
            return DecideItem(resource, None, event_id)
        reference = patient_reference(resource)
        try:
            async with self._slots:
                if reference is None:
                    return DecideItem(resource, None, event_id, await self.related.read_all(resource))
                patient, related = await asyncio.gather(self._read_patient(reference), self.related.read_all(resource))
        except FhirError as error:
            if event_id is None:
                raise
            log.warning("inbox event %s: EHR call failed (%s), retried later", event_id, type(error).__name__)
            await asyncio.to_thread(self.inbox.retry_later, event_id, type(error).__name__,
                                    timedelta(seconds=30), INBOX_MAX_ATTEMPTS)
            return None
        return DecideItem(resource, patient, event_id, related)

    async def _read_patient(self, reference: str) -> dict[str, Any] | None:
        resource_type, _, resource_id = reference.partition("/")
        try:
            return await self.fhir.read(resource_type, resource_id)
        except FhirNotFoundError:
            return None

    def _finish(self, event_id: int, *audit: AuditEntry) -> None:
        with transaction(self.engine) as session:
            InboxStore.mark_done(session, event_id)
            record(session, *audit)

    # --- pings: "something changed", so ask what

    async def _handle_ping(self, event: InboxEvent) -> None:
        spec = self.specs.get(event.subscription_key)
        if spec is None:
            await asyncio.to_thread(self._finish, event.id or 0)
            return
        resource_type = spec.criteria.split("?", 1)[0]
        since = await asyncio.to_thread(self._watermark, event.subscription_key)
        params = [("_lastUpdated", f"ge{since}"), ("_sort", "_lastUpdated")]
        found = await self.fhir.search(resource_type, params)
        await self._decide_all([(resource, None) for resource in found])
        newest = max([since, *(str((resource.get("meta") or {}).get("lastUpdated") or since) for resource in found)])
        query = query_entry(resource_type, params, step="ping", results=len(found))
        await asyncio.to_thread(self._advance, event.subscription_key, newest, event.id or 0, query)

    def _watermark(self, key: str) -> str:
        with transaction(self.engine) as session:
            mark = session.get(FeedWatermark, key)
            if mark is not None:
                return mark.last_updated
        return _fhir_instant(utcnow() - PING_LOOKBACK)

    def _advance(self, key: str, newest: str, event_id: int, query: AuditEntry) -> None:
        # Equal timestamps are re-read next time (``ge``); the version check makes that a no-op.
        with transaction(self.engine) as session:
            record(session, query)
            mark = session.get(FeedWatermark, key) or FeedWatermark(subscription_key=key, last_updated=newest)
            mark.last_updated = max(mark.last_updated, newest)
            session.add(mark)
            InboxStore.mark_done(session, event_id)


def _fhir_instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
