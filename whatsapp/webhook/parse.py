"""Parsing a whole webhook body into a :class:`WebhookBatch`: the envelope, and which reader each change goes to.

Implements the envelope of Meta's "Webhooks" reference
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components):
``{"object": "whatsapp_business_account", "entry": [{"id": WABA, "time"?, "changes": [{"field", "value"}]}]}``.
A ``messages`` change (``value``: ``metadata``, ``contacts``, ``statuses``, ``messages``, ``errors``) goes to
:mod:`~whatsapp.webhook.statuses` and :mod:`~whatsapp.webhook.messages`; the two template fields go to
:mod:`~whatsapp.webhook.template_events`. Every entry, change and item is read; unknown fields and other
webhook fields (account updates, …) are ignored.

One bad item does not sink the others: Meta retries a webhook that is not answered 200, so refusing a
whole body for one unreadable status would lose its good statuses on every retry. An item that cannot
be read (not an object, no id, an id over the length bound, a timestamp that is no number, a message
naming no sender, a template event without ``event``) is skipped with a log line that says where and
why, never what it held, and listed in :attr:`WebhookBatch.skipped`. A body that is not webhook-shaped
(not JSON, nested deeper than the parser's recursion limit, no ``entry`` list, a ``changes``, ``value``
or item array of the wrong type), or one whose every item was skipped, raises
:class:`~whatsapp.webhook.fields.WebhookPayloadError`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

log = logging.getLogger(__name__)
Read = TypeVar("Read")


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """Everything one webhook POST carried, in body order; ``template_statuses`` holds review events only."""

    statuses: list[StatusEvent] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    errors: list[WebhookErrorItem] = field(default_factory=list)
    template_statuses: list[TemplateStatusEvent] = field(default_factory=list)
    template_quality: list[TemplateQualityEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # where and why an item was skipped (no content)

    def items(self) -> int:
        """How many items were read (value-level ``errors[]`` included)."""
        return (len(self.statuses) + len(self.messages) + len(self.errors) + len(self.template_statuses)
                + len(self.template_quality))


def parse_webhook(body: bytes | str | dict[str, Any], *, received_at: int | None = None) -> WebhookBatch:
    """Parses a webhook body (raw bytes as received, or already decoded JSON). ``received_at`` (Unix
    seconds, default now) stands in for an item's timestamp that is out of range."""
    received = int(time.time()) if received_at is None else received_at
    if isinstance(body, bytes | str):
        try:
            document = json.loads(body)
        except RecursionError as exc:  # json's C scanner recurses once per nesting level
            raise WebhookPayloadError("body is nested too deeply") from exc
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
                _read_value(value, where, batch, received)
            elif is_quality_update(kind, value):
                _keep(batch, batch.template_quality, read_template_quality, value, f"{where}.value", entry)
            else:
                _keep(batch, batch.template_statuses, read_template_status, value, f"{where}.value", entry)
    if batch.skipped and not batch.items():
        raise WebhookPayloadError(batch.skipped[0])  # nothing in it could be read: not a webhook we know
    return batch


def _keep(batch: WebhookBatch, into: list[Read], read: Callable[..., Read], *args: Any) -> None:
    """Appends what ``read(*args)`` returns, or notes why the item was skipped."""
    try:
        into.append(read(*args))
    except WebhookPayloadError as error:  # its message names where, never the content
        log.warning("webhook item skipped: %s", error)
        batch.skipped.append(str(error))


def _read_value(value: dict[str, Any], where: str, batch: WebhookBatch, received: int) -> None:
    metadata = value.get("metadata")
    phone_number_id = opt_str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
    contacts = read_contacts(value, where)
    for i, item in enumerate(list_field(value, "statuses", where)):
        _keep(batch, batch.statuses, read_status, item, f"{where}.value.statuses[{i}]", phone_number_id, contacts,
              received)
    for i, item in enumerate(list_field(value, "messages", where)):
        _keep(batch, batch.messages, read_message, item, f"{where}.value.messages[{i}]", phone_number_id, contacts,
              received)
    batch.errors.extend(read_errors(value.get("errors"), f"{where}.value.errors"))
