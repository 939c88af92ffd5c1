"""Meta's two send limits, as token buckets on the virtual clock.

* Throughput ("Throughput", Cloud API overview): a business phone number sends up to 80 messages/s by
  default (up to 1,000 when upgraded); past it the send fails with **130429** "Rate limit hit". Here: one
  bucket per phone number id, ``rate`` tokens/s, ``burst = rate`` (at least 1).
* Pair rate ("Pair rate limits", same page; error **131056** "(Business Account, Consumer Account) pair rate
  limit hit"): about one message every 6 s from one business number to one user, with short bursts
  allowed and paid back afterwards. Here: one bucket per (phone number id, wa_id), refilled with
  ``pair_rate_limit_per_6s`` tokens per 6 s, holding ``pair_rate_burst`` tokens (default: the same number).

A refused send takes no token. Buckets read the virtual clock, so advancing it refills them.

``tolerance_seconds`` (default 0.1 s) lets a send through that arrives up to that much earlier than the
bucket allows, and takes the token anyway: the bucket goes into debt, which is paid back before the next
send (Meta describes pair-rate bursts the same way, as "debt" repaid by waiting). It keeps network jitter
between a client that paces itself exactly at the limit and this server from turning into refusals, while
a client that really sends too fast is still refused.
"""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` tokens per second; starts full."""

    __slots__ = ("_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = now

    def take(self, now: float, tolerance_seconds: float = 0.0) -> bool:
        """Takes one token if there is one (or will be within ``tolerance_seconds``); False, nothing taken,
        if not."""
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        if self._tokens >= 1.0 - tolerance_seconds * self.rate:
            self._tokens -= 1.0
            return True
        return False

    def seconds_until_token(self, now: float) -> float:
        tokens = min(self.capacity, self._tokens + max(0.0, now - self._stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class SendLimiter:
    """The throughput and pair buckets; settings are read on every check, so run-time changes apply."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._throughput: dict[str, TokenBucket] = {}
        self._pairs: dict[tuple[str, str], TokenBucket] = {}

    def reset(self) -> None:
        self._throughput.clear()
        self._pairs.clear()

    def throughput_ok(self, phone_number_id: str, per_second: float, tolerance_seconds: float = 0.0) -> bool:
        bucket = self._throughput.get(phone_number_id)
        now = self._clock()
        if bucket is None or bucket.rate != per_second:
            bucket = self._throughput[phone_number_id] = TokenBucket(per_second, max(1.0, per_second), now)
        return bucket.take(now, tolerance_seconds)

    def pair_ok(self, phone_number_id: str, wa_id: str, per_6s: float, burst: float | None,
                tolerance_seconds: float = 0.0) -> bool:
        key = (phone_number_id, wa_id)
        rate, capacity = per_6s / 6.0, float(burst if burst is not None else per_6s)
        bucket = self._pairs.get(key)
        now = self._clock()
        if bucket is None or bucket.rate != rate or bucket.capacity != capacity:
            bucket = self._pairs[key] = TokenBucket(rate, capacity, now)
        return bucket.take(now, tolerance_seconds)

    def pair_wait(self, phone_number_id: str, wa_id: str) -> float:
        """Seconds of virtual time until the pair bucket holds a token again (0 if it does)."""
        bucket = self._pairs.get((phone_number_id, wa_id))
        return 0.0 if bucket is None else bucket.seconds_until_token(self._clock())
