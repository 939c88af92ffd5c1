"""Reading one delivery status (``value.statuses[]`` of a ``messages`` change) into a :class:`StatusEvent`.

Implements Meta's "Status messages webhook reference": ``id`` (wamid), ``status`` (sent, delivered, read,
failed, …), ``timestamp`` (string of Unix seconds), ``recipient_id``, ``recipient_user_id`` (BSUID),
``biz_opaque_callback_data``, ``conversation``, ``pricing``, ``errors[]``. A missing recipient id is
completed from ``contacts[]`` (:mod:`whatsapp.webhook.contacts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp.webhook.contacts import Contact, complete
from whatsapp.webhook.fields import WebhookErrorItem, WebhookPayloadError, opt_str, read_errors, read_timestamp, req_str


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


def read_status(item: Any, where: str, phone_number_id: str | None, contacts: list[Contact]) -> StatusEvent:
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    pricing = item.get("pricing")
    conversation = item.get("conversation")
    recipient_id, recipient_user_id = complete(
        opt_str(item.get("recipient_id")) or None, opt_str(item.get("recipient_user_id")) or None, contacts)
    return StatusEvent(
        message_id=req_str(item, "id", where),
        status=req_str(item, "status", where),
        timestamp=read_timestamp(item.get("timestamp"), where),
        recipient_id=recipient_id,
        phone_number_id=phone_number_id,
        biz_opaque_callback_data=opt_str(item.get("biz_opaque_callback_data")),
        errors=tuple(read_errors(item.get("errors"), f"{where}.errors")),
        pricing=pricing if isinstance(pricing, dict) else None,
        conversation=conversation if isinstance(conversation, dict) else None,
        recipient_user_id=recipient_user_id,
    )
