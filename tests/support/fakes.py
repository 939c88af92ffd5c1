"""In-memory implementations of ports, for unit tests only (integration tests use real parts)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from ehr.notifications import IncomingNotification


class InMemoryNotificationSink:
    """A :class:`ehr.notifications.NotificationSink` that keeps items in a list.

    Like a real inbox it reports how many items were new (an identical item counts once).
    ``received`` keeps every accepted item in arrival order, repeats included. Set ``fail_with``
    to make ``accept`` raise (an unavailable database). Thread-safe: the intake calls it from a
    worker thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[IncomingNotification] = set()
        self._received: list[IncomingNotification] = []
        self.calls = 0
        self.fail_with: Exception | None = None

    def accept(self, items: list[IncomingNotification]) -> int:
        with self._lock:
            self.calls += 1
            if self.fail_with is not None:
                raise self.fail_with
            new = [item for item in items if item not in self._seen]
            self._seen.update(items)
            self._received.extend(items)
            return len(set(new))

    @property
    def received(self) -> list[IncomingNotification]:
        with self._lock:
            return list(self._received)

    async def wait_for(
        self, predicate: Callable[[list[IncomingNotification]], bool], timeout: float = 15.0
    ) -> list[IncomingNotification]:
        """Polls until ``predicate(received)`` holds; raises ``TimeoutError`` with what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            items = self.received
            if predicate(items):
                return items
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s; received {items}")
            await asyncio.sleep(0.05)
