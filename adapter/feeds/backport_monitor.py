"""The Backport feed monitor: follows each topic-based Subscription's event numbers and heartbeats
and recovers what it missed (Subscriptions Backport IG, errors.html "Handling errors").

- :meth:`BackportFeedMonitor.record` is the intake's ``on_backport``: a handshake sets the event
  baseline, an event notification advances the :class:`~ehr.backport_events.EventCursor`, a
  heartbeat (or ``$status``) reporting more events than arrived marks a gap.
- :meth:`BackportFeedMonitor.run_once` (every tick, on any number of instances: each feed row is
  leased with ``FOR UPDATE SKIP LOCKED``): a gap older than the grace period is recovered through
  ``$events`` where the CapabilityStatement advertises it, otherwise by a re-sync query
  (``_lastUpdated`` since the last moment the feed was known complete, minus a margin; results go
  to the inbox keyed by version, so what arrived already is not stored twice); no notification for
  2x the heartbeat period → ``$status``; a Subscription in ``error``/``off`` is set back to
  ``requested`` and then re-synced (in that order, so nothing falls between the two).
  Gap detection can be ``off`` per EHR; the heartbeat/``$status`` re-sync net always stays.

Every search is audited (``patient-query``) in the transaction that stores its results; a
re-activation is an ``admin`` entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from adapter.audit.fhir_access import query_entry
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.feeds.inbox import dedupe_key
from adapter.feeds.tables import BackportFeed, InboxEvent
from adapter.storage.db import insert_ignoring_duplicates, transaction, utcnow
from ehr.backport import (
    STOPPED,
    BackportSpec,
    BackportState,
    ensure_backport_subscription,
    fetch_events,
    fetch_status,
    reactivate,
    supports_events,
)
from ehr.backport_events import BackportNotification, BackportStatus, EventCursor, GapMode, event_numbers, parse_status
from ehr.client import FhirClient
from ehr.errors import FhirError
from ehr.notifications import IncomingNotification

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackportFeedConfig:
    """``gap_grace``: how long a gap may wait for late notifications before recovery;
    ``resync_margin``: how far before the last complete moment a re-sync starts (clock skew,
    late commits); ``first_lookback``: how far back a re-sync looks when the feed never was complete."""

    gap_detection: GapMode = "events-since-start"
    gap_grace: timedelta = timedelta(seconds=30)
    resync_margin: timedelta = timedelta(seconds=60)
    first_lookback: timedelta = timedelta(hours=1)
    lease: timedelta = timedelta(minutes=2)


class BackportFeedMonitor:
    def __init__(self, engine: Engine, fhir: FhirClient, specs: Sequence[BackportSpec], config: BackportFeedConfig,
                 *, public_base_url: str, master_secret: bytes, on_stored: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.fhir = fhir
        self.specs = {spec.key: spec for spec in specs}
        self.config = config
        self.public_base_url = public_base_url
        self.master_secret = master_secret
        self.on_stored = on_stored  # e.g. Pipeline.wake_inward
        self._events_supported: bool | None = None
        self.owner: str | None = None  # this boot's id in lease_owner (adapter.ops.liveness)

    # --- set-up

    async def ensure(self) -> list[BackportState]:
        """Creates or repairs each spec's Subscription and its feed row; a new Subscription id
        resets the event cursor (its handshake sets the baseline)."""
        states: list[BackportState] = []
        for spec in self.specs.values():
            done = await ensure_backport_subscription(self.fhir, spec, self.public_base_url, self.master_secret)
            kept = next((state for state in done if state.action != "deleted-duplicate"), None)
            if kept is not None:
                self._register(spec, kept)
            states.extend(done)
        return states

    def _register(self, spec: BackportSpec, state: BackportState) -> None:
        now = utcnow()
        with transaction(self.engine) as session:
            row = _row(session, spec.key, now)
            if row.subscription_id != state.fhir_id:
                row.subscription_id, row.last_event_number, row.pending_numbers = state.fhir_id, None, ""
                row.gap_since = None
            row.heartbeat_seconds = spec.heartbeat_seconds
            row.last_status, row.last_status_at, row.updated_at = state.status, now, now
            session.add(row)

    # --- what the intake heard

    def record(self, key: str, status: BackportStatus) -> None:
        """The intake's ``on_backport``: follows event numbers, heartbeats and the reported status."""
        now = utcnow()
        with transaction(self.engine) as session:
            row = _row(session, key, now)
            if status.subscription_id and row.subscription_id not in (None, status.subscription_id):
                log.info("Backport feed %s: notification from another Subscription; ignored", key)
                return
            row.subscription_id = row.subscription_id or status.subscription_id
            row.last_notification_at = row.updated_at = now
            if status.status and status.type != "handshake":  # a handshake says `requested` by definition
                row.last_status, row.last_status_at = status.status[:16], now
            cursor = EventCursor.decode(row.last_event_number, row.pending_numbers)
            if status.type == "handshake":
                cursor, row.gap_since, row.last_good_at = EventCursor(status.events_since_start or 0), None, now
            elif status.type == "heartbeat":
                row.last_heartbeat_at = now
                if self.config.gap_detection != "off" and cursor.behind(status.events_since_start):
                    row.gap_since = row.gap_since or now
            elif status.type == "event-notification":
                cursor = cursor.seen(event_numbers(status, self.config.gap_detection))
                if cursor.has_gap:
                    row.gap_since = row.gap_since or now
                else:
                    row.gap_since, row.last_good_at = None, now
            row.last_event_number, row.pending_numbers = cursor.last, cursor.encode_pending()
            session.add(row)

    # --- the tick

    async def run_once(self, now: datetime | None = None) -> int:
        """Checks every feed this instance can lease; returns how many needed work."""
        worked = 0
        for spec in self.specs.values():
            row = self._lease(spec.key)
            if row is None:
                continue
            try:
                worked += await self._check(spec, row, now or utcnow())
            except FhirError as error:  # the EHR is down or refused: next tick tries again
                log.warning("Backport feed %s: check failed (%s)", spec.key, type(error).__name__)
            finally:
                self._release(spec.key)
        return worked

    async def _check(self, spec: BackportSpec, row: BackportFeed, now: datetime) -> int:
        if row.subscription_id is None:
            return 0
        if row.gap_since is not None and now - row.gap_since >= self.config.gap_grace:
            await self._recover_gap(spec, row)
            return 1
        heard = max(t for t in (row.last_notification_at, row.last_status_at, row.updated_at) if t is not None)
        if not row.heartbeat_seconds or now - heard <= timedelta(seconds=2 * row.heartbeat_seconds):
            return 0
        status = await fetch_status(self.fhir, row.subscription_id)
        if status.status in STOPPED:
            state = await reactivate(self.fhir, row.subscription_id)
            reason = str(status.status)
            admin = AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent="system",
                               entity_ref=f"Subscription/{row.subscription_id}",
                               detail={"command": "backport.reactivate", "was": reason, "now": state.status})
            await self._resync(spec, row, reason, None, admin)
            return 1
        with transaction(self.engine) as session:
            current = _row(session, spec.key, now)
            current.last_status, current.last_status_at = (status.status or "")[:16] or None, utcnow()
            cursor = EventCursor.decode(current.last_event_number, current.pending_numbers)
            if self.config.gap_detection != "off" and cursor.behind(status.events_since_start):
                current.gap_since = current.gap_since or utcnow()
            session.add(current)
        return 1

    # --- recovery

    async def _recover_gap(self, spec: BackportSpec, row: BackportFeed) -> None:
        missing = EventCursor.decode(row.last_event_number, row.pending_numbers).missing()
        if missing is not None and missing[0] <= missing[1] and await self._has_events():
            try:
                bundle = await fetch_events(self.fhir, str(row.subscription_id), *missing)
                await self._store_events(spec, row, bundle)
                return
            except (FhirError, ValueError) as error:
                log.warning("Backport feed %s: $events failed (%s); re-syncing", spec.key, type(error).__name__)
        await self._resync(spec, row, "gap", None)

    async def _has_events(self) -> bool:
        if self._events_supported is None:
            self._events_supported = supports_events(await self.fhir.capabilities())
        return self._events_supported

    async def _store_events(self, spec: BackportSpec, row: BackportFeed, bundle: dict[str, Any]) -> None:
        entries = [entry.get("resource") for entry in bundle.get("entry") or [] if isinstance(entry, dict)]
        statuses = [parse_status(res) for res in entries
                    if isinstance(res, dict) and res.get("resourceType") in ("Parameters", "SubscriptionStatus")]
        items: list[IncomingNotification] = []
        for status in statuses:
            for event in status.events:
                target = (event.focus or "").rstrip("/").split("/")[-2:]
                if len(target) == 2 and target[0] == spec.resource_type:
                    items.append(BackportNotification(spec.key, "resource", target[0], target[1], None,
                                                      row.subscription_id, None, event.number))
        through = max((e.number for s in statuses for e in s.events if e.number is not None), default=None)
        query = query_entry("Subscription", ["$events"], step="backport-events", results=len(items))
        self._finish_recovery(spec.key, "gap", items, through, [query])

    async def _resync(self, spec: BackportSpec, row: BackportFeed, reason: str, through: int | None,
                      *audit: AuditEntry) -> None:
        started = utcnow()
        since = (row.last_good_at or started - self.config.first_lookback) - self.config.resync_margin
        params = [("_lastUpdated", f"ge{_instant(since)}"), ("_sort", "_lastUpdated")]
        found = await self.fhir.search(spec.resource_type, params)
        items: list[IncomingNotification] = [
            IncomingNotification(spec.key, "resource", str(res["resourceType"]), str(res["id"]),
                                 (res.get("meta") or {}).get("versionId"))
            for res in found if res.get("resourceType") == spec.resource_type and res.get("id")]
        query = query_entry(spec.resource_type, params, step="backport-resync", results=len(found))
        self._finish_recovery(spec.key, reason, items, through, [*audit, query], complete_at=started)
        log.info("Backport feed %s: re-synced after %s, %d resource(s)", spec.key, reason, len(items))

    def _finish_recovery(self, key: str, reason: str, items: list[IncomingNotification], through: int | None,
                         audit: list[AuditEntry], complete_at: datetime | None = None) -> None:
        now = utcnow()
        rows = [{"dedupe_key": dedupe_key(item), "kind": item.kind, "subscription_key": item.subscription_key,
                 "resource_type": item.resource_type, "resource_id": item.resource_id, "version_id": item.version_id,
                 "state": "pending", "attempts": 0, "next_attempt_at": now, "received_at": now} for item in items]
        with transaction(self.engine) as session:
            stored = insert_ignoring_duplicates(session, InboxEvent, rows, "dedupe_key")
            record(session, *audit)
            row = _row(session, key, now)
            cursor = EventCursor.decode(row.last_event_number, row.pending_numbers).caught_up(through)
            row.last_event_number, row.pending_numbers, row.gap_since = cursor.last, "", None
            row.last_good_at = max(t for t in (row.last_good_at, complete_at) if t is not None) if (
                complete_at or row.last_good_at) else None
            row.recoveries += 1
            row.last_recovery, row.last_recovery_at, row.updated_at = reason[:32], now, now
            session.add(row)
        if stored and self.on_stored is not None:
            self.on_stored()

    # --- leases (several instances on PostgreSQL)

    def _lease(self, key: str) -> BackportFeed | None:
        with transaction(self.engine) as session:
            row = session.exec(
                select(BackportFeed).where(col(BackportFeed.subscription_key) == key,
                                           or_(col(BackportFeed.lease_until).is_(None),
                                               col(BackportFeed.lease_until) < utcnow()))
                .with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            row.lease_until, row.lease_owner = utcnow() + self.config.lease, self.owner
            session.add(row)
            return row

    def _release(self, key: str) -> None:
        with transaction(self.engine) as session:
            row = session.get(BackportFeed, key)
            if row is not None:
                row.lease_until, row.lease_owner = None, None
                session.add(row)


def feed_health(engine: Engine) -> list[dict[str, Any]]:
    """One entry per Backport feed for ``/health``: no PHI, no secrets."""
    with Session(engine) as session:
        rows = session.exec(select(BackportFeed).order_by(col(BackportFeed.subscription_key))).all()
    return [{"feed": row.subscription_key, "kind": "backport", "subscription": row.subscription_id,
             "status": row.last_status, "last_event_number": row.last_event_number,
             "gap": row.gap_since is not None, "last_heartbeat_at": _iso(row.last_heartbeat_at),
             "last_notification_at": _iso(row.last_notification_at), "recoveries": row.recoveries,
             "last_recovery": row.last_recovery, "last_recovery_at": _iso(row.last_recovery_at),
             "healthy": row.last_status == "active" and row.gap_since is None} for row in rows]


def _row(session: Session, key: str, now: datetime) -> BackportFeed:
    row = session.get(BackportFeed, key, with_for_update=True)
    return row if row is not None else BackportFeed(subscription_key=key, updated_at=now)


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
