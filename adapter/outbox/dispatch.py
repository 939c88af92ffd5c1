"""Dispatch: claim due outbox rows, send them concurrently under the phone number's token bucket,
record what happened.

What each error class means (:mod:`whatsapp.errors`, Meta's error-codes reference):
transient → exponential backoff with jitter; pair rate limit (131056) → only that recipient waits
(≥ 6 s); window closed (131047) → re-planned as the message's fallback template; ambiguous (the
request may have reached Meta) → wait for a status carrying our ``biz_opaque_callback_data`` and
resend only after a grace period; undeliverable (131026 …) → dead letter and the optional fallback
hook; configuration errors (100, 132xxx …) → dead letter and an operator alert, no retries;
account-level errors (190, 368, 131031, 131042 …) → sending pauses for every instance until an admin
runs ``bridge sending resume`` (:mod:`adapter.outbox.circuit_breaker`).

A claimed message is sent only before its send-by time (half the lease) and while this instance's
heartbeat is recent (:meth:`adapter.ops.liveness.Liveness.alive_until`): past either, another instance
may take it over, so it is left for the next claim instead of risking a second send.

Each attempt's outcome goes to :meth:`OutboxStore.record` (:mod:`adapter.outbox.results`), which audits it
as a disclosure (or a failed one) in the same transaction; a message held back because sending paused is
not an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from adapter.ops.logs import traced
from adapter.ops.tables import ServiceFlag
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.claims import ClaimedMessage
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.throughput import TokenBucket
from adapter.storage.db import utcnow
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
PAUSED_RECHECK = timedelta(minutes=1)  # when a paused account's messages are looked at again
FLAG_CACHE_SECONDS = 1.0


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
                 batch_size: int, concurrency: int, bucket: TokenBucket | None = None,
                 alive_until: Callable[[], datetime | None] | None = None) -> None:
        self.outbox = outbox
        # adapter.ops.liveness.Liveness.alive_until: past it, others may soon take this instance for dead.
        self.alive_until = alive_until
        self.sender = sender
        self.policy = policy
        self.batch_size = batch_size
        self.bucket = bucket
        self._slots = asyncio.Semaphore(concurrency)
        self._paused: ServiceFlag | None = None
        self._paused_read_at = -FLAG_CACHE_SECONDS
        self._pausing: str | None = None  # an account-level error seen in the current batch

    @property
    def breaker_open(self) -> bool:
        return self._paused is not None

    @property
    def breaker_reason(self) -> str | None:
        return self._paused.reason if self._paused else None

    async def refresh_pause(self) -> bool:
        now = time.monotonic()
        if now - self._paused_read_at >= FLAG_CACHE_SECONDS:
            self._paused = await asyncio.to_thread(sending_paused, self.outbox.engine)
            self._paused_read_at = now
        return self._paused is not None

    async def run_once(self) -> int:
        """One tick: returns how many messages were attempted."""
        if await self.refresh_pause():
            return 0
        claimed = await asyncio.to_thread(self.outbox.claim_due, self.batch_size)
        if not claimed:
            return 0
        self._pausing = None
        outcomes = await asyncio.gather(*(self._send(message) for message in claimed))
        await asyncio.to_thread(self.outbox.record, list(outcomes))
        if self._pausing:
            self._paused_read_at = -FLAG_CACHE_SECONDS  # read the new pause at once
        return len(claimed)

    async def _send(self, message: ClaimedMessage) -> SendOutcome:
        with traced(message.resource_ref):  # the send step of the notification's journey (adapter.ops.logs)
            outcome = await self._attempt(message)
            if outcome.result == "sent":
                log.info("sent: outbox=%s attempt=%s", message.outbox_id, message.attempt_no)
            return outcome

    async def _attempt(self, message: ClaimedMessage) -> SendOutcome:
        async with self._slots:
            if self._pausing:  # an account-level error in this batch: do not make it worse
                # Never sent, so not a disclosure: the outbox writes no audit entry for it. It reached nobody, so
                # its recipient's pace ends now (answered_at), not at the claim's provisional end after the lease.
                return replace(self._retry(message, None, utcnow() + PAUSED_RECHECK), attempted=False,
                               answered_at=utcnow())
            if self.bucket is not None:
                await self.bucket.acquire()
            if self._too_late(message):
                # Held too long (rate limit, a slow machine), or this instance's heartbeat is late: not sent,
                # so not a disclosure; claimed again later. Past its lease, or once this instance may be taken
                # for dead, another instance may claim and send it, so sending now could send it twice.
                log.warning("outbox %s: lease ran out before sending; left for the next claim", message.outbox_id)
                return replace(self._retry(message, None, utcnow()), attempted=False, error_class="LeaseExpired")
            try:
                result = await self.sender.send(message.request)
            except WhatsAppError as error:
                return replace(self._classify(message, error), answered_at=utcnow())
        return SendOutcome(message.outbox_id, message.attempt_id, "sent", wamid=result.message_id,
                           answered_at=utcnow())

    def _too_late(self, message: ClaimedMessage) -> bool:
        now = utcnow()
        if message.send_by is not None and now >= message.send_by:
            return True
        fence = self.alive_until() if self.alive_until is not None else None
        return fence is not None and now >= fence

    def _retry(self, message: ClaimedMessage, error: WhatsAppError | None, at: datetime) -> SendOutcome:
        return SendOutcome(message.outbox_id, message.attempt_id, "retry", retry_at=at,
                           error_code=error.code if error else None,
                           error_class=type(error).__name__ if error else "SendingPaused")

    def _dead(self, message: ClaimedMessage, error: WhatsAppError, reason: str) -> SendOutcome:
        return SendOutcome(message.outbox_id, message.attempt_id, "dead", error_code=error.code,
                           error_class=type(error).__name__, dead_reason=reason)

    def _classify(self, message: ClaimedMessage, error: WhatsAppError) -> SendOutcome:
        now, name = utcnow(), type(error).__name__
        log.warning("send failed: outbox=%s attempt=%s class=%s code=%s", message.outbox_id,
                    message.attempt_no, name, error.code)
        if isinstance(error, AccountBlockedError):
            self._pausing = f"{name} code={error.code}: {error.title}"
            outcome = self._retry(message, error, now + PAUSED_RECHECK)
            return replace(outcome, pause_reason=self._pausing)
        if isinstance(error, WindowClosedError):
            return SendOutcome(message.outbox_id, message.attempt_id, "replan", error_code=error.code,
                               error_class=name)
        if isinstance(error, UndeliverableError | ConfigurationError):
            return self._dead(message, error, f"{name} code={error.code}")
        if message.attempt_no >= self.policy.max_attempts:
            return self._dead(message, error, f"gave up after {message.attempt_no} attempts ({name})")
        if isinstance(error, AmbiguousSendError):
            return replace(self._retry(message, error, now + AMBIGUOUS_GRACE), result="ambiguous")
        if isinstance(error, RecipientThrottledError):
            return self._retry(message, error, now + timedelta(seconds=max(6.0, error.retry_after_seconds)))
        if isinstance(error, RetryableError):
            return self._retry(message, error, now + self.policy.delay(message.attempt_no))
        return self._dead(message, error, f"unclassified error {name} code={error.code}")
