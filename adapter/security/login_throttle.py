"""Throttling failed logins per client address, and keeping their audit trail bounded.

Guessing a 256-bit API key is hopeless (:mod:`adapter.security.credentials`), but an unthrottled
login lets anyone make the service hash, look up and audit as many wrong keys as they can send. So
(45 CFR 164.308(a)(5)(ii)(C) log-in monitoring; OWASP ASVS 2.2.1 anti-automation):

- after ``limit`` failed logins from one address within ``window_seconds``, that address is blocked:
  every login from it is answered 429 with ``Retry-After`` (its key not even checked) for
  ``block_seconds``, doubled at each further block (``block_seconds``, twice, four times, … up to
  ``max_block_seconds``), until the address has been quiet for ``forget_seconds``;
- the audit trail gets the *first* failure from an address in full (as every failure was audited
  before: a failed login and a security alert), then **one summary entry per throttle window**: when
  the address is blocked, a security alert counting the failures since the last audited one and the
  attempts refused during the previous block. So an address that keeps guessing adds one audit row
  per block, and blocks grow longer: the audit rows it causes are bounded, whatever it sends;
- counts that no block summarised (a few failures, then a successful login or silence) are written
  as a summary too: at the address's next successful login, or once the address is forgotten.

The state lives **in memory, per process** (like :class:`portal_links.guard.ProbeGuard`): with several
workers or instances each counts on its own (an address gets ``limit`` tries per process before a
block), a restart forgets the blocks, and counts not yet summarised when the process stops are lost
(the first failure of each address is always audited in full). That is acceptable for a brake on
guessing; it is not an account lockout (a key is never locked, only an address slowed down).

The address is ``request.client.host``; behind a reverse proxy run uvicorn with ``--proxy-headers
--forwarded-allow-ips=<proxy>``, or every client shares the proxy's address (and its blocks).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Summary:
    """Login attempts from ``client`` that were not audited one by one."""

    client: str
    failures: int  # keys checked and found wrong
    refused: int  # attempts answered 429 while blocked (keys not checked)
    blocked_seconds: int | None = None  # the block this summary opens; None when no block is opened


@dataclass(frozen=True, slots=True)
class FailureVerdict:
    """What a failed login means: audit it in full (the address's first), the address is now blocked
    for ``retry_after`` seconds (None: not blocked), and the summaries to record with it."""

    audit_in_full: bool
    retry_after: int | None
    summaries: tuple[Summary, ...]


@dataclass(slots=True)
class _Client:
    last_seen: float
    failures: deque[float] = field(default_factory=deque)  # times of failures in the window
    pending_failures: int = 0
    pending_refused: int = 0
    blocked_until: float = 0.0
    strikes: int = 0  # blocks so far: the next block lasts block_seconds * 2**strikes

    def summary(self, client: str, blocked_seconds: int | None = None) -> Summary | None:
        if not (self.pending_failures or self.pending_refused or blocked_seconds):
            return None
        found = Summary(client, self.pending_failures, self.pending_refused, blocked_seconds)
        self.pending_failures = self.pending_refused = 0
        return found


class LoginThrottle:
    """Failed-login counter per client address (thread-safe, bounded memory); see the module docstring."""

    def __init__(self, limit: int = 5, window_seconds: float = 60.0, block_seconds: float = 60.0,
                 max_block_seconds: float = 3600.0, forget_seconds: float | None = None, *,
                 max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_seconds <= 0 or block_seconds <= 0 or max_block_seconds < block_seconds:
            raise ValueError("limit >= 1, and window, block and max block (>= block) seconds > 0")
        self.limit, self.window = limit, window_seconds
        self.block, self.max_block = block_seconds, max_block_seconds
        # Forgotten only after a quiet spell at least as long as the longest block, so that the
        # doubling is not reset by waiting out one block.
        self.forget = max(forget_seconds or 0.0, max_block_seconds, window_seconds)
        self.max_clients, self._clock = max_clients, clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()

    def refuse(self, client: str | None) -> tuple[int | None, tuple[Summary, ...]]:
        """Seconds ``client`` must still wait (None: it may try a key), and summaries now due. A
        refused attempt is counted into the address's next summary."""
        if client is None:
            return None, ()
        with self._lock:
            now = self._clock()
            due = self._sweep(now)
            state = self._clients.get(client)
            if state is None or state.blocked_until <= now:
                return None, due
            state.pending_refused += 1
            self._touch(client, state, now)
            return max(1, math.ceil(state.blocked_until - now)), due

    def failed(self, client: str | None) -> FailureVerdict:
        """Counts a failed login from ``client``; blocks it at the ``limit``-th failure in the window."""
        if client is None:  # no address to throttle by: audited in full, as before
            return FailureVerdict(True, None, ())
        with self._lock:
            now = self._clock()
            due = list(self._sweep(now))
            state = self._clients.get(client)
            first = state is None
            if state is None:
                state = _Client(last_seen=now)
                due += self._make_room()
            else:
                state.pending_failures += 1
            self._touch(client, state, now)
            while state.failures and state.failures[0] <= now - self.window:
                state.failures.popleft()
            state.failures.append(now)
            if len(state.failures) < self.limit:
                return FailureVerdict(first, None, tuple(due))
            seconds = math.ceil(min(self.block * 2 ** state.strikes, self.max_block))
            state.strikes += 1
            state.blocked_until = now + seconds
            state.failures.clear()
            summary = state.summary(client, seconds)
            return FailureVerdict(first, seconds, (*due, *([summary] if summary else [])))

    def succeeded(self, client: str | None) -> tuple[Summary, ...]:
        """A login from ``client`` succeeded: its failures are forgiven, their count summarised."""
        if client is None:
            return ()
        with self._lock:
            due = list(self._sweep(self._clock()))
            state = self._clients.pop(client, None)
            summary = state.summary(client) if state is not None else None
            return (*due, *([summary] if summary else []))

    def _touch(self, client: str, state: _Client, now: float) -> None:
        state.last_seen = now
        self._clients[client] = state
        self._clients.move_to_end(client)

    def _sweep(self, now: float) -> tuple[Summary, ...]:
        """Forgets the addresses quiet for ``forget`` seconds (oldest first), summarising their counts.
        A block never outlasts ``forget``, so a forgotten address is never still blocked."""
        due = []
        while self._clients:
            client, state = next(iter(self._clients.items()))
            if state.last_seen + self.forget > now:
                break
            del self._clients[client]
            summary = state.summary(client)
            if summary is not None:
                due.append(summary)
        return tuple(due)

    def _make_room(self) -> list[Summary]:
        """Bounded memory: beyond ``max_clients`` addresses the least recently seen is forgotten."""
        due = []
        while len(self._clients) >= self.max_clients:
            client, state = self._clients.popitem(last=False)
            summary = state.summary(client)
            if summary is not None:
                due.append(summary)
        return due
