"""Async client for the Cloud API's send endpoint.

Implements "Send messages" (``POST /{Version}/{Phone-Number-ID}/messages``,
https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages) with bearer authentication,
and turns every failure into one of the classes of :mod:`whatsapp.errors`:

* 2xx with ``messages[0].id`` → :class:`SendResult` (the ``wamid``; the message is only *accepted*:
  delivery is reported later by status webhooks);
* non-2xx → :func:`whatsapp.errors.classify`;
* connection never made → :class:`~whatsapp.errors.RetryableError`;
* request written but no usable answer → :class:`~whatsapp.errors.AmbiguousSendError`.

The sender does not retry: the caller (the outbox) owns attempts, backoff and reconciliation, and
records each attempt before calling :meth:`CloudApiSender.send`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from whatsapp.errors import AmbiguousSendError, RetryableError, classify
from whatsapp.transport import AiohttpTransport, RequestNotSentError, ResponseLostError, Transport

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendResult:
    """Meta accepted the message: ``message_id`` is its ``wamid``; ``wa_id`` the recipient's WhatsApp id."""

    message_id: str
    wa_id: str | None


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Serialises a message payload once, compactly, as UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class CloudApiSender:
    """Sends messages from one business phone number. Usable as an async context manager."""

    def __init__(
        self,
        base_url: str,
        api_version: str,
        phone_number_id: str,
        access_token: str,
        timeout_seconds: float = 10.0,
        max_connections: int = 64,
        transport: Transport | None = None,
    ) -> None:
        if not access_token:
            raise ValueError("access_token is empty")
        self._url = f"{base_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
        # Built once: the token never appears anywhere but this header.
        self._headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._timeout = timeout_seconds
        self._transport: Transport = transport or AiohttpTransport(max_connections=max_connections)

    @property
    def url(self) -> str:
        return self._url

    async def send(self, payload: dict[str, Any]) -> SendResult:
        """Sends one message payload; raises a :class:`~whatsapp.errors.WhatsAppError` subclass on failure."""
        return await self.send_encoded(encode_payload(payload))

    async def send_encoded(self, body: bytes) -> SendResult:
        """Sends an already serialised payload (for callers that store the exact bytes they send)."""
        try:
            status, raw = await self._transport.post_json(self._url, body, self._headers, self._timeout)
        except RequestNotSentError as exc:
            raise RetryableError(f"Request not sent ({exc})") from exc
        except ResponseLostError as exc:
            raise AmbiguousSendError(f"No response after sending ({exc})") from exc
        parsed = parse_json_object(raw)
        if 200 <= status < 300:
            return _result(status, parsed)
        error = classify(status, parsed)
        logger.info("cloud api send failed: %s", error)
        raise error

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> CloudApiSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """A Graph API response body as a JSON object, or None (empty, not JSON, not an object)."""
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _result(status: int, body: dict[str, Any] | None) -> SendResult:
    """Reads the accepted-message response; a 2xx without a wamid may still have been accepted."""
    message_id: Any = None
    if body is not None:
        try:
            message_id = body["messages"][0]["id"]
        except (KeyError, IndexError, TypeError):
            message_id = None
    if body is None or not isinstance(message_id, str) or not message_id:
        raise AmbiguousSendError("Success response without a message id", http_status=status)
    wa_id: str | None = None
    contacts = body.get("contacts")
    if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict):
        found = contacts[0].get("wa_id")
        wa_id = str(found) if found is not None else None
    return SendResult(message_id=message_id, wa_id=wa_id)
