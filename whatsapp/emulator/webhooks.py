"""The emulator's outgoing webhooks: statuses and inbound messages, signed and retried like Meta's.

Shapes follow the "Status messages webhook reference" and "Incoming messages webhook reference"
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components). Bodies are serialised the
way Meta does it (``/`` escaped as ``\\/``, non-ASCII as ``\\uXXXX``) and signed over those exact bytes
with ``X-Hub-Signature-256`` ("Validating payloads", Graph API webhooks). A delivery that does not get a
2xx is retried with growing delays, a bounded number of times (Meta keeps trying for up to about a day).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

import aiohttp

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import TITLES
from whatsapp.emulator.state import AcceptedMessage, EmulatorState
from whatsapp.signature import HEADER, sign

logger = logging.getLogger(__name__)
_WINDOW_SECONDS = 24 * 3600


def meta_json(document: Any) -> bytes:
    """JSON bytes as Meta writes them: compact, ASCII-only, with ``\\/``.

    A ``/`` can only occur inside JSON strings, so escaping every one keeps the document equivalent.
    """
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode("ascii")


def envelope(config: EmulatorConfig, phone_number_id: str, value: dict[str, Any]) -> dict[str, Any]:
    metadata = {"display_phone_number": config.phone_numbers.get(phone_number_id, ""),
                "phone_number_id": phone_number_id}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": config.waba_id, "changes": [
            {"value": {"messaging_product": "whatsapp", "metadata": metadata, **value}, "field": "messages"}
        ]}],
    }


def status_item(message: AcceptedMessage, status: str, *, category: str | None, free_form: bool,
                callback: str | None, error_code: int | None = None) -> dict[str, Any]:
    now = int(time.time())
    item: dict[str, Any] = {"id": message.message_id, "status": status, "timestamp": str(now),
                            "recipient_id": message.wa_id}
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    if status in ("sent", "delivered"):
        kind = "service" if free_form else (category or "utility").lower()
        key = f"{message.phone_number_id}:{message.wa_id}:{kind}".encode()
        conversation: dict[str, Any] = {
            "id": hashlib.sha256(key).hexdigest()[:32],
            "origin": {"type": kind},
        }
        if status == "sent":
            conversation["expiration_timestamp"] = str(now + _WINDOW_SECONDS)
        item["conversation"] = conversation
        # Per-message pricing (PMP): service replies inside the window are free.
        item["pricing"] = (
            {"billable": False, "pricing_model": "PMP", "type": "free_customer_service",
             "category": "service"}
            if free_form else {"billable": True, "pricing_model": "PMP", "type": "regular", "category": kind}
        )
    if error_code is not None:
        title = TITLES.get(error_code, "Message failed to send")
        item["errors"] = [{"code": error_code, "title": title, "message": title,
                           "error_data": {"details": title},
                           "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]
    return item


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
        self.webhook_url = config.webhook_url  # may be changed at run time (PUT /_emulator/webhook)

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

    def schedule_statuses(self, message: AcceptedMessage, *, category: str | None, free_form: bool,
                          callback: str | None, fail_code: int | None = None) -> None:
        if self.webhook_url and self._config.status_webhooks:
            self.spawn(self._status_sequence(message, category, free_form, callback, fail_code))

    async def _status_sequence(self, message: AcceptedMessage, category: str | None, free_form: bool,
                               callback: str | None, fail_code: int | None) -> None:
        delays = self._config.status_delays
        # One task per message, statuses in order: each waits until the previous delivery finished.
        steps: list[tuple[str, float | None]] = [("failed", delays.sent or 0.0)] if fail_code else [
            ("sent", delays.sent), ("delivered", delays.delivered), ("read", delays.read)]
        if self._config.out_of_order_statuses and len(steps) == 3 and delays.delivered is not None:
            steps[0], steps[1] = ("delivered", delays.sent), ("sent", delays.delivered)
        for status, delay in steps:
            if delay is None:
                return
            await asyncio.sleep(delay)
            item = status_item(message, status, category=category, free_form=free_form, callback=callback,
                               error_code=fail_code)
            message.statuses.append(status)
            document = envelope(self._config, message.phone_number_id, {"statuses": [item]})
            await self.deliver(document, kind="status", label=status, message_id=message.message_id)

    async def deliver(
        self, document: dict[str, Any], *, kind: str, label: str, message_id: str
    ) -> dict[str, Any]:
        """Signs and posts one webhook, retrying on failure; returns the delivery record."""
        body = meta_json(document)
        record: dict[str, Any] = {
            "id": next(self._delivery_ids), "kind": kind, "label": label, "message_id": message_id,
            "url": self.webhook_url, "attempts": [], "delivered": False,
            "body": body.decode("ascii"),
        }
        self._state.webhooks.append(record)
        url = self.webhook_url
        if not url or self._session is None:
            return record
        headers = {"Content-Type": "application/json", HEADER: sign(body, self._secret)}
        policy = self._config.webhook_retry
        timeout = aiohttp.ClientTimeout(total=policy.timeout_seconds)
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(policy.delay_before(attempt))
            outcome: dict[str, Any] = {"at": time.time()}
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
                return record
        logger.warning("emulator webhook %s gave up after %d attempts", record["id"], policy.max_attempts)
        return record
