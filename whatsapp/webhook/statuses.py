"""Reading one delivery status (``value.statuses[]`` of a ``messages`` change) into a :class:`StatusEvent`.

Implements Meta's "Status messages webhook reference": ``id`` (wamid), ``status`` (sent, delivered, read,
failed, …), ``timestamp`` (string of Unix seconds), ``recipient_id``, ``recipient_user_id`` (BSUID),
``biz_opaque_callback_data``, ``conversation``, ``pricing``, ``errors[]``. A missing recipient id is
completed from ``contacts[]`` (:mod:`whatsapp.webhook.contacts`).

Bounds (:mod:`whatsapp.webhook.fields` for ids, text and numbers): a ``status`` is at most
:data:`MAX_STATUS_CHARS` (Meta's longest is 9), else the status is refused; callback data longer than
Meta's documented 512 characters (Cloud API "Messages" reference) cannot be ours and is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from whatsapp.webhook.contacts import Contact, complete
from whatsapp.webhook.fields import WebhookErrorItem, WebhookPayloadError, opt_str, read_errors, read_timestamp, req_str

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 16
MAX_CALLBACK_CHARS = 512


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A delivery status for a message we sent."""

    message_id: str
    status: str
    timestamp: int
    recipient_id: str | None
    phone_number_id: str | None
    biz_opaque_callback_data: str | None = None
    errors: tuple[WebhookErrorItem, ...] = ()
    pricing: dict[str, Any] | None = None
    conversation: dict[str, Any] | None = None
    recipient_user_id: str | None = None  # BSUID


def read_status(item: Any, where: str, phone_number_id: str | None, contacts: list[Contact],
                received_at: int) -> StatusEvent:
    """``received_at`` (Unix seconds) stands in for a timestamp out of range."""
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    callback = opt_str(item.get("biz_opaque_callback_data"))
    if callback is not None and len(callback) > MAX_CALLBACK_CHARS:
        log.warning("webhook %s.biz_opaque_callback_data is longer than %d characters; ignored", where,
                    MAX_CALLBACK_CHARS)
        callback = None
    pricing = item.get("pricing")
    conversation = item.get("conversation")
    recipient_id, recipient_user_id = complete(
        opt_str(item.get("recipient_id")) or None, opt_str(item.get("recipient_user_id")) or None, contacts)
    return StatusEvent(
        message_id=req_str(item, "id", where),
        status=req_str(item, "status", where, MAX_STATUS_CHARS),
        timestamp=read_timestamp(item.get("timestamp"), where, received_at),
        recipient_id=recipient_id,
        phone_number_id=phone_number_id,
        biz_opaque_callback_data=callback,
        errors=tuple(read_errors(item.get("errors"), f"{where}.errors")),
        pricing=pricing if isinstance(pricing, dict) else None,
        conversation=conversation if isinstance(conversation, dict) else None,
        recipient_user_id=recipient_user_id,
    )
