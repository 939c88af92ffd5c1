"""The emulator's virtual clock: real time plus an offset that only moves forward.

Everything Meta timestamps or measures runs on it: webhook ``timestamp``/``time`` fields, the 24-hour
customer service window (from the virtual time of the user's last message), conversation
``expiration_timestamp``, template review and the token buckets. ``POST /_emulator/clock
{"advance_seconds": N}`` jumps it forward, so a test can close a window or refill a pair-rate bucket
without waiting. The clock runs at real speed between jumps; ``time_scale`` (see
:mod:`whatsapp.emulator.tunables`) only compresses the webhook retry backoffs.
"""

from __future__ import annotations

import time


class VirtualClock:
    """``now() = time.time() + offset``; ``advance`` adds to the offset (never negative)."""

    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        return self.now()

    def reset(self) -> None:
        self.offset = 0.0

    def to_json(self) -> dict[str, float]:
        now = self.now()
        return {"now": now, "timestamp": int(now), "offset_seconds": self.offset}
