"""Each EHR event feed's health (classic rest-hook Subscriptions and polled feeds), from what the
subscription manager and the poller recorded (:mod:`adapter.feeds.polling`), for ``/health`` and
``bridge feeds status``. Backport feeds report theirs in :mod:`adapter.feeds.backport_monitor`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.feeds.tables import FeedState, InboxEvent
from adapter.storage.db import utcnow

# A feed is up when its Subscription is active or its last poll succeeded (also for /metrics).
UP_STATUSES = ("active", "ok")


@dataclass(frozen=True)
class FeedHealth:
    """One feed's health: ``kind`` ``rest-hook`` or ``poll``; ``status`` the Subscription's status
    (``active``, ``requested``, ``error``, ``off``, ``missing``) or the poll's (``ok``, ``failing``);
    ``last_event_at`` when the inbox last received a change from it; ``last_error`` an error class
    or the EHR's ``Subscription.error`` (never PHI, never a token)."""

    feed: str
    kind: str
    status: str
    healthy: bool
    last_event_at: datetime | None
    last_run_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    watermark: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("last_event_at", "last_run_at", "last_ok_at"):
            data[name] = data[name].isoformat() if data[name] is not None else None
        return data


def feed_health(engine: Engine, *, stale_after: timedelta | None = None,
                now: datetime | None = None) -> list[FeedHealth]:
    """Every feed the manager or the poller has seen, by feed key. A feed is healthy when its
    Subscription is ``active`` or its last poll succeeded, and (with ``stale_after``) its last
    successful run is not older than that."""
    now = now or utcnow()
    with Session(engine) as session:
        rows = list(session.exec(select(FeedState).order_by(col(FeedState.feed))))
        received = dict(session.exec(
            select(InboxEvent.subscription_key, func.max(InboxEvent.received_at))
            .group_by(col(InboxEvent.subscription_key))).all())
    report = []
    for row in rows:
        inbox_key = row.key if row.kind == "rest-hook" else f"poll:{row.key}"[:64]
        healthy = row.status in UP_STATUSES
        if stale_after is not None and (row.last_ok_at is None or now - row.last_ok_at > stale_after):
            healthy = False
        report.append(FeedHealth(f"{row.kind}:{row.key}", row.kind, row.status, healthy, received.get(inbox_key),
                                 row.last_run_at, row.last_ok_at, row.last_error, row.watermark))
    return report
