"""Probe rate limit for portal links: too many bad tokens from one address → 429 without checking.

A client address that produced more than ``limit`` unknown, malformed or expired tokens within
the last ``window`` gets the neutral page with status 429 for every link request until its old
failures leave the window; those requests are recorded as ``rate_limited`` and their tokens are
not even verified. Guessing a token is hopeless anyway (128 random bits under an HMAC); this
keeps a scanner from filling the access log with verification work and makes it visible.

The counts live **in memory, per process**: with several workers or instances each has its own
window (the effective limit is ``limit`` times the number of processes), and a restart forgets. That is acceptable
for a brake; :func:`recent_rate_limited` reads the durable picture from ``link_request``.

The address is ``request.client.host``: behind a reverse proxy run uvicorn with
``--proxy-headers --forwarded-allow-ips=<proxy>`` so that it is the patient's, not the proxy's
(otherwise one scanner would get everyone behind the proxy rate-limited). Many patients behind
one NAT (a hospital's guest Wi-Fi) share an address; the default limit is far above what taps on
real links produce, since real links do not fail.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portal_links.clock import utcnow
from portal_links.tables import LinkRequest

FAILURE_OUTCOMES = frozenset({"unknown", "malformed", "expired"})


class ProbeGuard:
    """Sliding-window failure counter per client address (thread-safe, bounded memory)."""

    def __init__(self, limit: int = 20, window_seconds: float = 60.0, *, max_addresses: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("limit must be >= 1 and window_seconds > 0")
        self.limit, self.window, self.max_addresses, self._clock = limit, window_seconds, max_addresses, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def blocked(self, client: str | None) -> bool:
        """True while ``client`` has ``limit`` or more failures in the window."""
        if client is None:
            return False
        with self._lock:
            times = self._recent(client, self._clock())
            return times is not None and len(times) >= self.limit

    def note(self, client: str | None, outcome: str) -> None:
        """Counts ``outcome`` against ``client`` if it is a failure (unknown, malformed, expired)."""
        if client is None or outcome not in FAILURE_OUTCOMES:
            return
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if times is None:
                times = self._failures[client] = deque(maxlen=self.limit + 1)
                while len(self._failures) > self.max_addresses:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(client)
            times.append(now)


@dataclass(frozen=True)
class RateLimitedClient:
    client: str | None
    requests: int
    first_at: datetime
    last_at: datetime


def recent_rate_limited(engine: Engine, *, since: datetime | None = None, window: timedelta = timedelta(hours=1),
                        limit: int = 100) -> list[RateLimitedClient]:
    """For operators: addresses that were rate-limited since ``since`` (default: the last hour),
    most requests first, from the durable access log (all processes)."""
    start = since if since is not None else utcnow() - window
    statement = (
        select(col(LinkRequest.client), func.count(), func.min(col(LinkRequest.at)), func.max(col(LinkRequest.at)))
        .where(col(LinkRequest.outcome) == "rate_limited", col(LinkRequest.at) >= start)
        .group_by(col(LinkRequest.client))
        .order_by(func.count().desc())
        .limit(limit)
    )
    with Session(engine) as session:
        return [RateLimitedClient(client, int(count), first, last)
                for client, count, first, last in session.exec(statement).all()]
