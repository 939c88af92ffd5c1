"""Dispatch: claim due outbox rows, send them concurrently, record what happened.

Retry policy by error class (:mod:`whatsapp.errors`): transient → exponential backoff with
jitter; pair rate limit → only that recipient waits; ambiguous (the request may have reached
Meta) → wait for a status carrying our ``biz_opaque_callback_data`` and resend only after a grace
period; undeliverable or configuration errors → dead letter; account-level errors → open the
circuit breaker so no further sends are attempted until it cools down.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from adapter.db import utcnow
from adapter.outbox import ClaimedMessage, OutboxStore, SendOutcome
from whatsapp.errors import (
    AccountBlockedError,
    AmbiguousSendError,
    ConfigurationError,
    RecipientThrottledError,
    RetryableError,
    UndeliverableError,
    WhatsAppError,
    WindowClosedError,
)

log = logging.getLogger(__name__)
AMBIGUOUS_GRACE = timedelta(minutes=2)
BREAKER_COOLDOWN = timedelta(minutes=5)


class MessageSender(Protocol):
    async def send(self, payload: dict[str, Any]) -> Any: ...


@dataclass
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempt_no: int) -> timedelta:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries spread."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt_no - 1))
        return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


class Dispatcher:
    def __init__(self, outbox: OutboxStore, sender: MessageSender, policy: RetryPolicy, *,
                 batch_size: int, concurrency: int) -> None:
        self.outbox = outbox
        self.sender = sender
        self.policy = policy
        self.batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)
        self.breaker_open_until: datetime | None = None
        self.breaker_reason: str | None = None

    @property
    def breaker_open(self) -> bool:
        return self.breaker_open_until is not None and utcnow() < self.breaker_open_until

    async def run_once(self) -> int:
        """One tick: returns how many messages were attempted."""
        if self.breaker_open:
            return 0
        claimed = await asyncio.to_thread(self.outbox.claim_due, self.batch_size)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send(message) for message in claimed))
        await asyncio.to_thread(self.outbox.record, list(outcomes))
        return len(claimed)

    async def _send(self, message: ClaimedMessage) -> SendOutcome:
        async with self._slots:
            if self.breaker_open:  # opened by another send of this batch
                return self._retry(message, None, utcnow() + BREAKER_COOLDOWN)
            try:
                result = await self.sender.send(message.request)
            except WhatsAppError as error:
                return self._classify(message, error)
        return SendOutcome(message.outbox_id, message.attempt_id, "sent", wamid=result.message_id)

    def _retry(self, message: ClaimedMessage, error: WhatsAppError | None, at: datetime) -> SendOutcome:
        return SendOutcome(message.outbox_id, message.attempt_id, "retry", retry_at=at,
                           error_code=error.code if error else None,
                           error_class=type(error).__name__ if error else "CircuitOpen")

    def _dead(self, message: ClaimedMessage, error: WhatsAppError, reason: str) -> SendOutcome:
        return SendOutcome(message.outbox_id, message.attempt_id, "dead", error_code=error.code,
                           error_class=type(error).__name__, dead_reason=reason)

    def _classify(self, message: ClaimedMessage, error: WhatsAppError) -> SendOutcome:
        now, name = utcnow(), type(error).__name__
        log.warning("send failed: outbox=%s attempt=%s class=%s code=%s", message.outbox_id,
                    message.attempt_no, name, error.code)
        if isinstance(error, AccountBlockedError):
            self.breaker_open_until, self.breaker_reason = now + BREAKER_COOLDOWN, f"{name} code={error.code}"
            return self._retry(message, error, now + BREAKER_COOLDOWN)
        if isinstance(error, UndeliverableError | ConfigurationError | WindowClosedError):
            return self._dead(message, error, f"{name} code={error.code}")
        if message.attempt_no >= self.policy.max_attempts:
            return self._dead(message, error, f"gave up after {message.attempt_no} attempts ({name})")
        if isinstance(error, AmbiguousSendError):
            outcome = self._retry(message, error, now + AMBIGUOUS_GRACE)
            return SendOutcome(**{**outcome.__dict__, "result": "ambiguous"})
        if isinstance(error, RecipientThrottledError):
            return self._retry(message, error, now + timedelta(seconds=max(6.0, error.retry_after_seconds)))
        if isinstance(error, RetryableError):
            return self._retry(message, error, now + self.policy.delay(message.attempt_no))
        return self._dead(message, error, f"unclassified error {name} code={error.code}")
