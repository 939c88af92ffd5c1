"""Parsing of Meta's WhatsApp Business Account webhook bodies into typed events.

Implements the webhook shapes of Meta's "Webhooks" reference
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components):
``{"object": "whatsapp_business_account", "entry": [{"id": WABA, "time"?, "changes": [{"field", "value"}]}]}``.

``field == "messages"`` (``value``: ``metadata``, ``contacts``, ``statuses``, ``messages``, ``errors``):

* Status messages webhook reference (``value.statuses[]``): ``id`` (wamid), ``status`` (sent, delivered,
  read, failed, …), ``timestamp`` (string of Unix seconds), ``recipient_id``, ``recipient_user_id``,
  ``biz_opaque_callback_data``, ``conversation``, ``pricing``, ``errors[]``.
* Incoming messages webhook reference (``value.messages[]``): ``from``, ``from_user_id``, ``id``,
  ``timestamp``, ``type`` with ``text.body``, ``button.payload`` (template quick reply),
  ``interactive.type`` + ``button_reply`` / ``list_reply`` (``nfm_reply``: Flows, type only), and
  ``context.id`` (the message being replied to).
* Business-scoped user IDs (2026, "Business-scoped user IDs", developers.facebook.com/documentation/
  business-messaging/whatsapp/business-scoped-user-ids): ``contacts[]`` carry ``user_id`` (BSUID, e.g.
  ``US.1000000000000000001``) and ``wa_id`` only when the phone number may be shared; a message may lack
  ``from`` and carry ``from_user_id``. A message must name its sender by at least one of the two; the
  missing one is taken from the matching contact (same ``wa_id`` / ``user_id``, or the only contact when
  it contradicts neither). Statuses are completed the same way (``recipient_id`` / ``recipient_user_id``).
* System messages webhook reference (``type: "system"``; no ``contacts`` array): ``system.type`` is
  ``user_changed_number`` (new number in ``system.wa_id``, formerly ``new_wa_id``; the older spelling
  ``customer_changed_number`` is normalised to ``user_changed_number``, and its ``system.customer``
  stands in for a missing ``from``) or ``user_changed_user_id`` (new BSUID in ``system.user_id``; no phone
  number). ``system.body`` quotes the profile name and numbers, so it is not kept.

``field == "message_template_status_update"`` ("message_template_status_update webhook reference"):
``value`` = ``{event, message_template_id, message_template_name, message_template_language, reason,
message_template_category?, other_info?: {title, description}, …}`` → :class:`TemplateStatusEvent`.

``field == "message_template_quality_update"`` ("message_template_quality_update webhook reference"):
``value`` = ``{previous_quality_score, new_quality_score, message_template_id, …}`` (GREEN, YELLOW, RED,
UNKNOWN) → :class:`TemplateQualityEvent`, in its own list: a YELLOW/RED score warns before Meta pauses a
template, but it is not a review status, and ``template_statuses`` holds review events only (a consumer
may store their ``event`` as the template's state). A quality body sent under the status field (as an
older version of Meta's example shows) is read as a quality update.

Every entry, change and item is read; unknown fields and other webhook fields (account updates, …) are
ignored. A body that is not webhook-shaped raises :class:`WebhookPayloadError`. The contact's profile name
and username are deliberately not extracted: personal data this service does not need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

WEBHOOK_OBJECT = "whatsapp_business_account"
TEMPLATE_STATUS_FIELD = "message_template_status_update"
TEMPLATE_QUALITY_FIELD = "message_template_quality_update"
_SYSTEM_TYPE_ALIASES = {"customer_changed_number": "user_changed_number"}


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
    recipient_user_id: str | None = None  # BSUID


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a user sent to one of our numbers; ``from_id`` and/or ``from_user_id`` is set."""

    message_id: str
    from_id: str | None  # phone-number WhatsApp id; absent for a username user who hides the number
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
    from_user_id: str | None = None  # BSUID
    interactive_type: str | None = None  # button_reply, list_reply, nfm_reply, …
    system_type: str | None = None  # user_changed_number, user_changed_user_id, …
    new_wa_id: str | None = None
    new_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class TemplateStatusEvent:
    """A template's review or lifecycle event (APPROVED, REJECTED, PAUSED, …) or a quality-score change."""

    template_id: str | None
    name: str | None
    language: str | None
    event: str
    reason: str | None  # rejection reason; "NONE" when paused; None when absent or null
    category: str | None = None
    title: str | None = None  # other_info.title: FIRST_PAUSE, SECOND_PAUSE, UNPAUSE, …
    waba_id: str | None = None
    entry_time: int | None = None  # entry.time, Unix seconds


@dataclass(frozen=True, slots=True)
class TemplateQualityEvent:
    """A template's quality score changed (GREEN, YELLOW, RED, UNKNOWN)."""

    template_id: str | None
    name: str | None
    language: str | None
    new_score: str
    previous_score: str | None
    waba_id: str | None = None
    entry_time: int | None = None


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """Everything one webhook POST carried, in body order."""

    statuses: list[StatusEvent] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    errors: list[WebhookErrorItem] = field(default_factory=list)
    template_statuses: list[TemplateStatusEvent] = field(default_factory=list)
    template_quality: list[TemplateQualityEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Contact:
    wa_id: str | None
    user_id: str | None


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
            elif kind == TEMPLATE_QUALITY_FIELD or ("event" not in value and "new_quality_score" in value):
                batch.template_quality.append(_template_quality(value, f"{where}.value", entry))
            else:
                batch.template_statuses.append(_template_status(value, f"{where}.value", entry))
    return batch


def _read_value(value: dict[str, Any], where: str, batch: WebhookBatch) -> None:
    metadata = value.get("metadata")
    phone_number_id = _opt_str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
    contacts = [_Contact(_opt_str(c.get("wa_id")) or None, _opt_str(c.get("user_id")) or None)
                for c in _list(value, "contacts", where) if isinstance(c, dict)]
    for i, item in enumerate(_list(value, "statuses", where)):
        batch.statuses.append(_status(item, f"{where}.value.statuses[{i}]", phone_number_id, contacts))
    for i, item in enumerate(_list(value, "messages", where)):
        batch.messages.append(_message(item, f"{where}.value.messages[{i}]", phone_number_id, contacts))
    batch.errors.extend(_errors(value.get("errors"), f"{where}.value.errors"))


def _complete(wa_id: str | None, user_id: str | None, contacts: list[_Contact]) -> tuple[str | None, str | None]:
    """Fills the missing one of (phone id, BSUID) from the contact that names the same user."""
    if (wa_id and user_id) or not contacts:
        return wa_id, user_id
    match = next((c for c in contacts if (wa_id and c.wa_id == wa_id) or (user_id and c.user_id == user_id)),
                 None)
    if match is None and len(contacts) == 1:
        only = contacts[0]
        if (not wa_id or only.wa_id in (None, wa_id)) and (not user_id or only.user_id in (None, user_id)):
            match = only
    if match is None:
        return wa_id, user_id
    return wa_id or match.wa_id, user_id or match.user_id


def _status(item: Any, where: str, phone_number_id: str | None, contacts: list[_Contact]) -> StatusEvent:
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    pricing = item.get("pricing")
    conversation = item.get("conversation")
    recipient_id, recipient_user_id = _complete(
        _opt_str(item.get("recipient_id")) or None, _opt_str(item.get("recipient_user_id")) or None, contacts)
    return StatusEvent(
        message_id=_req_str(item, "id", where),
        status=_req_str(item, "status", where),
        timestamp=_timestamp(item.get("timestamp"), where),
        recipient_id=recipient_id,
        phone_number_id=phone_number_id,
        biz_opaque_callback_data=_opt_str(item.get("biz_opaque_callback_data")),
        errors=tuple(_errors(item.get("errors"), f"{where}.errors")),
        pricing=pricing if isinstance(pricing, dict) else None,
        conversation=conversation if isinstance(conversation, dict) else None,
        recipient_user_id=recipient_user_id,
    )


def _message(item: Any, where: str, phone_number_id: str | None, contacts: list[_Contact]) -> InboundMessage:
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    kind = _req_str(item, "type", where)
    text = button_payload = button_text = reply_id = reply_title = interactive_type = None
    system_type = new_wa_id = new_user_id = None
    from_id = _opt_str(item.get("from")) or None
    if kind == "text":
        text = _opt_str(_sub(item, "text").get("body"))
    elif kind == "button":  # quick-reply button of a template
        button = _sub(item, "button")
        button_payload, button_text = _opt_str(button.get("payload")), _opt_str(button.get("text"))
    elif kind == "interactive":
        interactive = _sub(item, "interactive")
        interactive_type = _opt_str(interactive.get("type"))
        if interactive_type in ("button_reply", "list_reply"):
            reply = interactive.get(interactive_type)
        else:  # untyped (older bodies): whichever reply is there; nfm_reply (Flows) has no id/title
            reply = None if interactive_type else interactive.get("button_reply") or interactive.get("list_reply")
        if isinstance(reply, dict):
            reply_id, reply_title = _opt_str(reply.get("id")), _opt_str(reply.get("title"))
    elif kind == "system":
        system = _sub(item, "system")
        raw_type = _opt_str(system.get("type"))
        system_type = _SYSTEM_TYPE_ALIASES.get(raw_type, raw_type) if raw_type else None
        new_wa_id = _opt_str(system.get("wa_id") or system.get("new_wa_id"))
        new_user_id = _opt_str(system.get("user_id") or system.get("new_user_id"))
        from_id = from_id or _opt_str(system.get("customer")) or None
    from_id, from_user_id = _complete(from_id, _opt_str(item.get("from_user_id")) or None, contacts)
    if from_id is None and from_user_id is None:
        raise WebhookPayloadError(f"{where} has neither from nor from_user_id")
    context = item.get("context")
    return InboundMessage(
        message_id=_req_str(item, "id", where),
        from_id=from_id,
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
        from_user_id=from_user_id,
        interactive_type=interactive_type,
        system_type=system_type,
        new_wa_id=new_wa_id,
        new_user_id=new_user_id,
    )


def _template_status(value: dict[str, Any], where: str, entry: dict[str, Any]) -> TemplateStatusEvent:
    event = value.get("event")
    if not isinstance(event, str) or not event:
        raise WebhookPayloadError(f"{where}.event is missing")
    other_info = value.get("other_info")
    return TemplateStatusEvent(
        template_id=_opt_str(value.get("message_template_id")),
        name=_opt_str(value.get("message_template_name")),
        language=_opt_str(value.get("message_template_language")),
        event=event.upper(),
        reason=_opt_str(value.get("reason")),
        category=_opt_str(value.get("message_template_category")),
        title=_opt_str(other_info.get("title")) if isinstance(other_info, dict) else None,
        waba_id=_opt_str(entry.get("id")),
        entry_time=_entry_time(entry),
    )


def _template_quality(value: dict[str, Any], where: str, entry: dict[str, Any]) -> TemplateQualityEvent:
    score = value.get("new_quality_score")
    if not isinstance(score, str) or not score:
        raise WebhookPayloadError(f"{where}.new_quality_score is missing")
    previous = value.get("previous_quality_score")
    return TemplateQualityEvent(
        template_id=_opt_str(value.get("message_template_id")),
        name=_opt_str(value.get("message_template_name")),
        language=_opt_str(value.get("message_template_language")),
        new_score=score.upper(),
        previous_score=str(previous).upper() if previous is not None else None,
        waba_id=_opt_str(entry.get("id")),
        entry_time=_entry_time(entry),
    )


def _entry_time(entry: dict[str, Any]) -> int | None:
    value = entry.get("time")
    return None if isinstance(value, bool) else _int_or_none(value)


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
