"""A token bucket for the sending phone number's throughput limit.

Meta allows each business phone number 80 messages per second by default, up to 1,000 after an
upgrade (https://developers.facebook.com/docs/whatsapp/throughput). Past it, the API answers 130429.
The bucket keeps this process under the configured rate so the limit is met by waiting here rather
than by errors there. Its burst is a tenth of a second's worth: requests bunch up on the way to Meta
(connection pool, scheduling), so a bucket as large as Meta's would let arrivals exceed Meta's.
Several instances share the number's rate: configure each with its share.
"""

from __future__ import annotations

import asyncio
import time

from adapter.ops.metrics import pacing_waited


class TokenBucket:
    def __init__(self, rate_per_second: float, capacity: float | None = None) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.rate = rate_per_second
        self.capacity = capacity if capacity is not None else max(1.0, rate_per_second / 10)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Waits until a token is available and takes it (first come, first served)."""
        async with self._lock:
            self._refill(time.monotonic())
            if self._tokens < 1:
                pacing_waited((1 - self._tokens) / self.rate)  # the process's pacing counters
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill(time.monotonic())
            self._tokens -= 1
