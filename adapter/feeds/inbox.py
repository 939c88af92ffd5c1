"""The inbox: EHR notifications stored durably before they are acknowledged, then claimed and
processed by the pipeline. A repeat (same resource version) is dropped at insert time; a repeat
without a version is dropped later, when the re-read version turns out to be processed already.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.feeds.tables import INBOX_CLAIMABLE, InboxEvent
from adapter.ops.logs import traced
from adapter.security.refusal_budget import RefusalBudget, audit_entries
from adapter.storage.claimable import in_states, indexed_by
from adapter.storage.db import insert_ignoring_duplicates, insert_new, table_of, transaction, utcnow
from ehr.notifications import IncomingNotification

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)
_CLAIMABLE = indexed_by(InboxEvent, "ix_inbox_claimable")


def dedupe_key(item: IncomingNotification) -> str:
    if item.kind == "resource" and item.version_id:
        return f"{item.resource_type}/{item.resource_id}/_history/{item.version_id}"
    target = f"{item.resource_type}/{item.resource_id}" if item.kind == "resource" else "ping"
    number = getattr(item, "event_number", None)  # ehr.backport_events.BackportNotification
    subscription = getattr(item, "subscription_id", None)
    if number is not None and subscription:
        # A Backport event: a re-delivery carries the same subscription, counter and event number.
        counter = getattr(item, "events_since_start", None)
        return f"bp:{item.subscription_key}:{subscription}:{counter}:{number}:{target}"
    # No version to dedupe on: keep every delivery; the version check after the re-read dedupes.
    return f"{item.subscription_key}:{target}:{uuid.uuid4().hex}"


def _log_received(rows: list[dict[str, object]], new: set[str] | None = None) -> None:
    """The intake step of a notification's journey (:mod:`adapter.ops.logs`): no identifier but its event id."""
    for row in rows:
        ref = f"{row['resource_type']}/{row['resource_id']}" if row["kind"] == "resource" else None
        with traced(ref):
            state = "received" if new is None else "stored" if row["dedupe_key"] in new else "already stored"
            log.info("EHR notification %s (%s)", state, row["resource_type"] or row["kind"])


def _rows(items: list[IncomingNotification]) -> list[dict[str, object]]:
    now = utcnow()
    return [{"dedupe_key": dedupe_key(item), "kind": item.kind, "subscription_key": item.subscription_key,
             "resource_type": item.resource_type, "resource_id": item.resource_id, "version_id": item.version_id,
             "state": "pending", "attempts": 0, "next_attempt_at": now, "received_at": now} for item in items]


class InboxStore:
    """Implements :class:`ehr.notifications.NotificationSink` on the database."""

    def __init__(self, engine: Engine, lease: timedelta = LEASE) -> None:
        self.engine = engine
        self.refusals = RefusalBudget()
        self.lease = lease  # an instance that dies holding events frees them after this (settings: inbox_lease_seconds)
        # This boot's id in lease_owner: a dead instance's events are released by owner (adapter.ops.liveness).
        self.owner: str | None = None

    def accept(self, items: list[IncomingNotification]) -> int:
        rows = _rows(items)
        with transaction(self.engine) as session:
            stored = insert_ignoring_duplicates(session, InboxEvent, rows, "dedupe_key")
        _log_received(rows)
        return stored

    def accept_groups(self, groups: Sequence[list[IncomingNotification]]) -> list[int | Exception]:
        """Stores the notifications of several requests in one transaction (group commit,
        :mod:`adapter.http.group_commit`): per request, how many items were new. If the shared write
        fails, each request's items are stored alone, so one bad request fails only itself."""
        rows = [_rows(items) for items in groups]
        try:
            with transaction(self.engine) as session:
                new = set(insert_new(session, InboxEvent, [row for group in rows for row in group], "dedupe_key"))
            for group in rows:
                _log_received(group, new)
            counts: list[int | Exception] = []
            for group in rows:  # a version two requests carry is new for the first only
                keys = {row["dedupe_key"] for row in group} & new
                new -= keys
                counts.append(len(keys))
            return counts
        except Exception as error:
            if len(groups) == 1:
                return [error]
        outcomes: list[int | Exception] = []
        for items in groups:
            try:
                outcomes.append(self.accept(items))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def refused(self, subscription_key: str, reason: str, client: str | None) -> None:
        """Records a notification refused for a missing or wrong channel secret (``ehr.intake``'s
        ``on_refused``) as a DICOM 110113 security alert, in a transaction of its own: nothing else
        of the request is stored. Beyond the first per source and minute, refusals are summarised
        (:mod:`adapter.security.refusal_budget`). Accepted notifications get no entry of their own:
        they carry references only, and each re-read they lead to is a ``patient-read``."""
        refusal = AuditEntry(kind=Kind.SECURITY_ALERT, action=Action.EXECUTE, outcome=Outcome.SERIOUS_FAILURE,
                             agent="ehr", source=client, entity_ref=f"subscription/{subscription_key}"[:300],
                             detail={"reason": reason, "channel": "rest-hook", "subscription": subscription_key[:64]})
        entries = audit_entries(self.refusals.admit(client, reason), refusal)
        if entries:
            with transaction(self.engine) as session:
                record(session, *entries)

    def claim(self, limit: int, now: datetime | None = None) -> list[InboxEvent]:
        """Leases due events to this instance (``SKIP LOCKED`` lets other instances take others).

        Reads the partial index of pending events (``ix_inbox_claimable``) in id order: the finished
        history is never touched, only events still pending (due, retrying later, or leased)."""
        now = now or utcnow()
        with transaction(self.engine) as session:
            events = list(session.exec(
                select(_CLAIMABLE)
                .where(in_states(_CLAIMABLE.state, INBOX_CLAIMABLE), col(_CLAIMABLE.next_attempt_at) <= now,
                       or_(col(_CLAIMABLE.lease_until).is_(None), col(_CLAIMABLE.lease_until) < now))
                .order_by(col(_CLAIMABLE.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ))
            for event in events:
                event.lease_until, event.lease_owner = now + self.lease, self.owner
                event.attempts += 1
                session.add(event)
            return events

    @staticmethod
    def mark_done(session: Session, event_id: int) -> None:
        InboxStore.mark_done_many(session, [event_id])

    @staticmethod
    def mark_done_many(session: Session, event_ids: list[int]) -> None:
        """Finishes these events in one UPDATE, in the transaction of what they led to."""
        if event_ids:
            session.execute(update(table_of(InboxEvent)).where(table_of(InboxEvent).c.id.in_(event_ids))
                            .values(state="done", processed_at=utcnow(), lease_until=None))

    def retry_later(self, event_id: int, error: str, delay: timedelta, max_attempts: int) -> None:
        with transaction(self.engine) as session:
            event = session.get(InboxEvent, event_id)
            if event is None:
                return
            event.last_error, event.lease_until = error[:200], None
            if event.attempts >= max_attempts:
                event.state = "dead"
            else:
                event.next_attempt_at = utcnow() + delay
            session.add(event)

    def dead_events(self, limit: int = 100) -> list[InboxEvent]:
        """Notifications the pipeline gave up on (the EHR kept failing): visible, re-drivable."""
        with Session(self.engine) as session:
            return list(session.exec(select(InboxEvent).where(col(InboxEvent.state) == "dead")
                                     .order_by(col(InboxEvent.id)).limit(limit)))

    def redrive(self, event_id: int, *, agent: str = "system") -> str:
        """Queues a dead event again, audited (``admin``, agent ``cli:<user>`` from the CLI)."""
        with transaction(self.engine) as session:
            event = session.get(InboxEvent, event_id)
            if event is None:
                return f"no inbox event {event_id}"
            if event.state != "dead":
                return f"inbox event {event_id} is {event.state}, not dead"
            event.state, event.attempts, event.next_attempt_at, event.lease_until = "pending", 0, utcnow(), None
            session.add(event)
            record(session, AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=agent,
                                       entity_ref=f"inbox/{event_id}", detail={"command": "inbox.retry"}))
            return f"inbox event {event_id} queued again"
