"""The emulator's outgoing webhooks: statuses, inbound messages and template updates, as Meta sends them.

Meta's delivery behaviour ("Webhooks" overview of the Cloud API; Graph API "Webhooks: Getting started"):

* each POST is signed with ``X-Hub-Signature-256`` over the exact body bytes, which Meta writes escaped
  (:func:`~whatsapp.emulator.payloads.meta_json`);
* a POST that does not get a 2xx in time is retried with growing delays (Meta: "with decreasing frequency",
  for up to 7 days). Here the policy's delays are emulated seconds; the real sleep is delay x ``time_scale``,
  and each attempt records its scheduled ``delay_before`` so tests can check the schedule quickly;
* delivery is at least once and unordered: copies of a delivery may arrive, some later
  (``duplicate_webhooks``), ``delivered`` may come before ``sent`` (``out_of_order_statuses``) or not at all
  (``skip_delivered``), and several statuses may share one POST (``batch_statuses``, collected for
  ``batch_window_seconds``).

All settings are read from the run-time :class:`~whatsapp.emulator.tunables.Tunables` when used.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.payloads import bsuid_for, envelope, meta_json, status_item
from whatsapp.emulator.state import AcceptedMessage, EmulatorState
from whatsapp.emulator.tunables import Tunables
from whatsapp.signature import HEADER, sign

__all__ = ["WebhookDispatcher", "envelope", "meta_json", "status_item"]  # the last three: for older imports

logger = logging.getLogger(__name__)
_Batch = list[tuple[dict[str, Any], "asyncio.Future[None]"]]


class WebhookDispatcher:
    """Posts webhooks to the configured URL, with bounded concurrency and retries, and logs each delivery."""

    def __init__(self, config: EmulatorConfig, state: EmulatorState) -> None:
        self._config = config
        self._state = state
        self._secret = config.app_secret.encode()
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max(1, config.webhook_concurrency))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._delivery_ids = iter(range(1, 1 << 62))
        self._batches: dict[str, _Batch] = {}
        self._armed: set[str] = set()
        self.webhook_url = config.webhook_url  # may be changed at run time (PUT /_emulator/webhook)

    @property
    def _tunables(self) -> Tunables:
        return self._state.tunables

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- statuses ----------------------------------------------------------------------------------------

    def schedule_statuses(self, message: AcceptedMessage, *, category: str | None, free_form: bool,
                          callback: str | None, fail_code: int | None = None) -> None:
        if self.webhook_url and self._tunables.status_webhooks:
            self.spawn(self._status_sequence(message, category, free_form, callback, fail_code))

    def _steps(self, failed: bool) -> list[tuple[str, float]]:
        tun = self._tunables
        delays = tun.status_delays
        if failed:
            return [("failed", delays.sent or 0.0)]
        steps: list[tuple[str, float]] = []
        for status, delay in (("sent", delays.sent), ("delivered", delays.delivered), ("read", delays.read)):
            if delay is None:  # None stops the sequence there (e.g. read receipts off)
                break
            steps.append((status, delay))
        if tun.skip_delivered:
            steps = [step for step in steps if step[0] != "delivered"]
        if tun.out_of_order_statuses and len(steps) >= 2:
            (first, first_delay), (second, second_delay) = steps[0], steps[1]
            steps[0], steps[1] = (second, first_delay), (first, second_delay)
        return steps

    async def _status_sequence(self, message: AcceptedMessage, category: str | None, free_form: bool,
                               callback: str | None, fail_code: int | None) -> None:
        # One task per message, statuses in order: each waits until the previous delivery finished.
        for status, delay in self._steps(fail_code is not None):
            await asyncio.sleep(delay)
            now = self._state.clock.now()
            user_id = bsuid_for(message.wa_id, self._config.waba_id) if self._tunables.bsuid_enabled else None
            item = status_item(message, status, category=category, free_form=free_form, callback=callback,
                               error_code=fail_code, now=now, user_id=user_id)
            message.user_id = user_id
            message.add_status(status, now, item.get("errors"))
            await self._post_status(message.phone_number_id, item)

    async def _post_status(self, phone_number_id: str, item: dict[str, Any]) -> None:
        size = self._tunables.batch_statuses
        if size <= 1:
            document = envelope(self._config, phone_number_id, {"statuses": [item]})
            await self.deliver(document, kind="status", label=item["status"], message_id=item["id"])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch = self._batches.setdefault(phone_number_id, [])
        batch.append((item, done))
        if len(batch) >= size:
            self._flush(phone_number_id)
        elif phone_number_id not in self._armed:
            self._armed.add(phone_number_id)
            self.spawn(self._flush_later(phone_number_id))
        await done

    async def _flush_later(self, phone_number_id: str) -> None:
        try:
            await asyncio.sleep(self._tunables.batch_window_seconds)
        finally:
            self._armed.discard(phone_number_id)
        self._flush(phone_number_id)

    def _flush(self, phone_number_id: str) -> None:
        batch = self._batches.pop(phone_number_id, None)
        if batch:
            self.spawn(self._deliver_batch(phone_number_id, batch))

    async def _deliver_batch(self, phone_number_id: str, batch: _Batch) -> None:
        items = [item for item, _ in batch]
        try:
            document = envelope(self._config, phone_number_id, {"statuses": items})
            await self.deliver(document, kind="status", label=",".join(i["status"] for i in items),
                               message_id=items[0]["id"], message_ids=[i["id"] for i in items])
        finally:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    # -- delivery ----------------------------------------------------------------------------------------

    async def deliver(self, document: dict[str, Any], *, kind: str, label: str, message_id: str,
                      message_ids: list[str] | None = None) -> dict[str, Any]:
        """Signs and posts one webhook, retrying on failure; returns the delivery record.

        With ``duplicate_webhooks = n``, n copies of the same signed bytes follow (copy k after
        k * ``duplicate_delay_seconds``), each recorded with ``duplicate_of`` = this record's id.
        """
        body = meta_json(document)
        record = self._record(body, kind, label, message_id, message_ids, duplicate_of=None)
        await self._post(body, record)
        copies = self._tunables.duplicate_webhooks
        for k in range(1, copies + 1):
            self.spawn(self._duplicate(body, record, k))
        return record

    def _record(self, body: bytes, kind: str, label: str, message_id: str, message_ids: list[str] | None,
                duplicate_of: int | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": next(self._delivery_ids), "kind": kind, "label": label, "message_id": message_id,
            "message_ids": message_ids or [message_id], "duplicate_of": duplicate_of,
            "created_at": self._state.clock.now(), "url": self.webhook_url, "attempts": [], "delivered": False,
            "body": body.decode("ascii"),
        }
        self._state.webhooks.append(record)
        return record

    async def _duplicate(self, body: bytes, original: dict[str, Any], k: int) -> None:
        await asyncio.sleep(self._tunables.duplicate_delay_seconds * k)
        record = self._record(body, original["kind"], original["label"], original["message_id"],
                              original["message_ids"], duplicate_of=original["id"])
        await self._post(body, record)

    async def _post(self, body: bytes, record: dict[str, Any]) -> None:
        url = record["url"]
        if not url or self._session is None:
            return
        headers = {"Content-Type": "application/json", HEADER: sign(body, self._secret)}
        policy = self._config.webhook_retry
        timeout = aiohttp.ClientTimeout(total=policy.timeout_seconds)
        for attempt in range(1, policy.max_attempts + 1):
            delay = policy.delay_before(attempt) if attempt > 1 else 0.0
            if delay:
                await asyncio.sleep(delay * self._tunables.time_scale)
            outcome: dict[str, Any] = {"at": self._state.clock.now(), "delay_before": delay}
            try:
                async with self._slots, self._session.post(url, data=body, headers=headers,
                                                           timeout=timeout) as resp:
                    await resp.read()
                    outcome["http_status"] = resp.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                outcome["error"] = type(exc).__name__
            record["attempts"].append(outcome)
            if 200 <= outcome.get("http_status", 0) < 300:
                record["delivered"] = True
                return
        logger.warning("emulator webhook %s gave up after %d attempts", record["id"], policy.max_attempts)
