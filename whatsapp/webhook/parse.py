"""Parsing a whole webhook body into a :class:`WebhookBatch`: the envelope, and which reader each change goes to.

Implements the envelope of Meta's "Webhooks" reference
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components):
``{"object": "whatsapp_business_account", "entry": [{"id": WABA, "time"?, "changes": [{"field", "value"}]}]}``.
A ``messages`` change (``value``: ``metadata``, ``contacts``, ``statuses``, ``messages``, ``errors``) goes to
:mod:`~whatsapp.webhook.statuses` and :mod:`~whatsapp.webhook.messages`; the two template fields go to
:mod:`~whatsapp.webhook.template_events`. Every entry, change and item is read; unknown fields and other
webhook fields (account updates, …) are ignored. A body that is not webhook-shaped raises
:class:`~whatsapp.webhook.fields.WebhookPayloadError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from whatsapp.webhook.contacts import read_contacts
from whatsapp.webhook.fields import WebhookErrorItem, WebhookPayloadError, list_field, opt_str, read_errors
from whatsapp.webhook.messages import InboundMessage, read_message
from whatsapp.webhook.statuses import StatusEvent, read_status
from whatsapp.webhook.template_events import (
    TEMPLATE_QUALITY_FIELD,
    TEMPLATE_STATUS_FIELD,
    TemplateQualityEvent,
    TemplateStatusEvent,
    is_quality_update,
    read_template_quality,
    read_template_status,
)

WEBHOOK_OBJECT = "whatsapp_business_account"


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """Everything one webhook POST carried, in body order; ``template_statuses`` holds review events only."""

    statuses: list[StatusEvent] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    errors: list[WebhookErrorItem] = field(default_factory=list)
    template_statuses: list[TemplateStatusEvent] = field(default_factory=list)
    template_quality: list[TemplateQualityEvent] = field(default_factory=list)


def parse_webhook(body: bytes | str | dict[str, Any]) -> WebhookBatch:
    """Parses a webhook body (raw bytes as received, or already decoded JSON)."""
    if isinstance(body, bytes | str):
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise WebhookPayloadError("body is not JSON") from exc
    else:
        document = body
    if not isinstance(document, dict):
        raise WebhookPayloadError("body is not a JSON object")
    if document.get("object") != WEBHOOK_OBJECT:
        raise WebhookPayloadError(f"object is not {WEBHOOK_OBJECT!r}")
    entries = document.get("entry")
    if not isinstance(entries, list):
        raise WebhookPayloadError("entry is not a list")
    batch = WebhookBatch()
    for e, entry in enumerate(entries):
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise WebhookPayloadError(f"entry[{e}].changes is not a list")
        for c, change in enumerate(changes):
            where = f"entry[{e}].changes[{c}]"
            if not isinstance(change, dict):
                raise WebhookPayloadError(f"{where} is not an object")
            kind = change.get("field", "messages")
            if kind not in ("messages", TEMPLATE_STATUS_FIELD, TEMPLATE_QUALITY_FIELD):
                continue  # account updates, phone number quality, …: not ours to read here
            value = change.get("value")
            if not isinstance(value, dict):
                raise WebhookPayloadError(f"{where}.value is not an object")
            if kind == "messages":
                _read_value(value, where, batch)
            elif is_quality_update(kind, value):
                batch.template_quality.append(read_template_quality(value, f"{where}.value", entry))
            else:
                batch.template_statuses.append(read_template_status(value, f"{where}.value", entry))
    return batch


def _read_value(value: dict[str, Any], where: str, batch: WebhookBatch) -> None:
    metadata = value.get("metadata")
    phone_number_id = opt_str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
    contacts = read_contacts(value, where)
    for i, item in enumerate(list_field(value, "statuses", where)):
        batch.statuses.append(read_status(item, f"{where}.value.statuses[{i}]", phone_number_id, contacts))
    for i, item in enumerate(list_field(value, "messages", where)):
        batch.messages.append(read_message(item, f"{where}.value.messages[{i}]", phone_number_id, contacts))
    batch.errors.extend(read_errors(value.get("errors"), f"{where}.value.errors"))
