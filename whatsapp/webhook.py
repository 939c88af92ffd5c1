"""Parsing of Meta's ``messages`` webhook bodies into typed events.

Implements the WhatsApp Business Account webhook shapes
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components):
``{"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "messages",
"value": {"metadata": {...}, "statuses": [...], "messages": [...], "errors": [...]}}]}]}``.

* Status messages webhook reference (``value.statuses[]``): ``id`` (wamid), ``status`` (sent, delivered,
  read, failed, …), ``timestamp`` (string of Unix seconds), ``recipient_id``, ``biz_opaque_callback_data``,
  ``conversation``, ``pricing``, ``errors[]``.
* Incoming messages webhook reference (``value.messages[]``): ``from``, ``id``, ``timestamp``, ``type``
  with ``text.body``, ``button.payload`` (template quick reply), ``interactive.button_reply.id`` /
  ``list_reply.id``, and ``context.id`` (the message being replied to).

Every entry, change and item is read; unknown fields and other webhook fields (template status,
account updates) are ignored. A body that is not webhook-shaped raises :class:`WebhookPayloadError`.
The contact's profile name is deliberately not extracted: it is personal data this service does not need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

WEBHOOK_OBJECT = "whatsapp_business_account"


class WebhookPayloadError(ValueError):
    """The body is not a WhatsApp Business Account webhook (message says where, never the content)."""


@dataclass(frozen=True, slots=True)
class WebhookErrorItem:
    """One ``errors[]`` item: Meta's code and title (details kept for dead letters)."""

    code: int | None
    title: str
    details: str | None = None


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


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a user sent to one of our numbers."""

    message_id: str
    from_id: str
    timestamp: int
    type: str
    phone_number_id: str | None
    text: str | None = None
    button_payload: str | None = None
    button_text: str | None = None
    interactive_reply_id: str | None = None
    interactive_reply_title: str | None = None
    context_message_id: str | None = None
    errors: tuple[WebhookErrorItem, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """Everything one webhook POST carried, in body order."""

    statuses: list[StatusEvent] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    errors: list[WebhookErrorItem] = field(default_factory=list)


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
            if change.get("field", "messages") != "messages":
                continue  # template status, account updates, …: not ours to read here
            value = change.get("value")
            if not isinstance(value, dict):
                raise WebhookPayloadError(f"{where}.value is not an object")
            _read_value(value, where, batch)
    return batch


def _read_value(value: dict[str, Any], where: str, batch: WebhookBatch) -> None:
    metadata = value.get("metadata")
    phone_number_id = _opt_str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
    for i, item in enumerate(_list(value, "statuses", where)):
        batch.statuses.append(_status(item, f"{where}.value.statuses[{i}]", phone_number_id))
    for i, item in enumerate(_list(value, "messages", where)):
        batch.messages.append(_message(item, f"{where}.value.messages[{i}]", phone_number_id))
    batch.errors.extend(_errors(value.get("errors"), f"{where}.value.errors"))


def _status(item: Any, where: str, phone_number_id: str | None) -> StatusEvent:
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    pricing = item.get("pricing")
    conversation = item.get("conversation")
    return StatusEvent(
        message_id=_req_str(item, "id", where),
        status=_req_str(item, "status", where),
        timestamp=_timestamp(item.get("timestamp"), where),
        recipient_id=_opt_str(item.get("recipient_id")),
        phone_number_id=phone_number_id,
        biz_opaque_callback_data=_opt_str(item.get("biz_opaque_callback_data")),
        errors=tuple(_errors(item.get("errors"), f"{where}.errors")),
        pricing=pricing if isinstance(pricing, dict) else None,
        conversation=conversation if isinstance(conversation, dict) else None,
    )


def _message(item: Any, where: str, phone_number_id: str | None) -> InboundMessage:
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    kind = _req_str(item, "type", where)
    text = button_payload = button_text = reply_id = reply_title = None
    if kind == "text":
        text = _opt_str(_sub(item, "text").get("body"))
    elif kind == "button":  # quick-reply button of a template
        button = _sub(item, "button")
        button_payload, button_text = _opt_str(button.get("payload")), _opt_str(button.get("text"))
    elif kind == "interactive":
        interactive = _sub(item, "interactive")
        reply = interactive.get("button_reply") or interactive.get("list_reply") or {}
        if isinstance(reply, dict):
            reply_id, reply_title = _opt_str(reply.get("id")), _opt_str(reply.get("title"))
    context = item.get("context")
    return InboundMessage(
        message_id=_req_str(item, "id", where),
        from_id=_req_str(item, "from", where),
        timestamp=_timestamp(item.get("timestamp"), where),
        type=kind,
        phone_number_id=phone_number_id,
        text=text,
        button_payload=button_payload,
        button_text=button_text,
        interactive_reply_id=reply_id,
        interactive_reply_title=reply_title,
        context_message_id=_opt_str(context.get("id")) if isinstance(context, dict) else None,
        errors=tuple(_errors(item.get("errors"), f"{where}.errors")),
    )


def _errors(raw: Any, where: str) -> list[WebhookErrorItem]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise WebhookPayloadError(f"{where} is not a list")
    found = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        code = item.get("code")
        data = item.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        found.append(WebhookErrorItem(
            code=code if isinstance(code, int) and not isinstance(code, bool) else _int_or_none(code),
            title=str(item.get("title") or item.get("message") or ""),
            details=_opt_str(details),
        ))
    return found


def _list(value: dict[str, Any], key: str, where: str) -> list[Any]:
    items = value.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise WebhookPayloadError(f"{where}.value.{key} is not a list")
    return items


def _sub(item: dict[str, Any], key: str) -> dict[str, Any]:
    sub = item.get(key)
    return sub if isinstance(sub, dict) else {}


def _req_str(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise WebhookPayloadError(f"{where}.{key} is missing")
    return str(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any, where: str) -> int:
    number = _int_or_none(value) if not isinstance(value, bool) else None
    if number is None:
        raise WebhookPayloadError(f"{where}.timestamp is not Unix seconds")
    return number
