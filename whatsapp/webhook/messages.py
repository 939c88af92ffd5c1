"""Reading one incoming message (``value.messages[]`` of a ``messages`` change) into an :class:`InboundMessage`.

Implements Meta's "Incoming messages webhook reference": ``from``, ``from_user_id`` (BSUID), ``id``,
``timestamp``, ``type`` with ``text.body``, ``button.payload`` (template quick reply),
``interactive.type`` + ``button_reply`` / ``list_reply`` (``nfm_reply``: Flows, type only), and
``context.id`` (the message being replied to). A message must name its sender by ``from`` or
``from_user_id``; the other is completed from ``contacts[]`` (:mod:`whatsapp.webhook.contacts`).

System messages ("System messages webhook reference", ``type: "system"``, no ``contacts`` array):
``system.type`` is ``user_changed_number`` (new number in ``system.wa_id``, formerly ``new_wa_id``; the
older spelling ``customer_changed_number`` is normalised to ``user_changed_number``, and its
``system.customer`` stands in for a missing ``from``) or ``user_changed_user_id`` (new BSUID in
``system.user_id``; no phone number). ``system.body`` quotes the profile name and numbers, so it is not kept.

Text is read as storable Unicode (a lone surrogate or NUL in a body becomes U+FFFD) and the timestamp
is bounded, by the readers of :mod:`whatsapp.webhook.fields`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp.webhook.contacts import Contact, complete
from whatsapp.webhook.fields import (
    WebhookErrorItem,
    WebhookPayloadError,
    opt_str,
    read_errors,
    read_timestamp,
    req_str,
    sub_object,
)

_SYSTEM_TYPE_ALIASES = {"customer_changed_number": "user_changed_number"}
MAX_TYPE_CHARS = 32  # Meta's longest message type is 15 characters (request_welcome)


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


def read_message(item: Any, where: str, phone_number_id: str | None, contacts: list[Contact],
                 received_at: int) -> InboundMessage:
    """``received_at`` (Unix seconds) stands in for a timestamp out of range."""
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{where} is not an object")
    kind = req_str(item, "type", where, MAX_TYPE_CHARS)
    text = button_payload = button_text = reply_id = reply_title = interactive_type = None
    system_type = new_wa_id = new_user_id = None
    from_id = opt_str(item.get("from")) or None
    if kind == "text":
        text = opt_str(sub_object(item, "text").get("body"))
    elif kind == "button":  # quick-reply button of a template
        button = sub_object(item, "button")
        button_payload, button_text = opt_str(button.get("payload")), opt_str(button.get("text"))
    elif kind == "interactive":
        interactive = sub_object(item, "interactive")
        interactive_type = opt_str(interactive.get("type"))
        if interactive_type in ("button_reply", "list_reply"):
            reply = interactive.get(interactive_type)
        else:  # untyped (older bodies): whichever reply is there; nfm_reply (Flows) has no id/title
            reply = None if interactive_type else interactive.get("button_reply") or interactive.get("list_reply")
        if isinstance(reply, dict):
            reply_id, reply_title = opt_str(reply.get("id")), opt_str(reply.get("title"))
    elif kind == "system":
        system = sub_object(item, "system")
        raw_type = opt_str(system.get("type"))
        system_type = _SYSTEM_TYPE_ALIASES.get(raw_type, raw_type) if raw_type else None
        new_wa_id = opt_str(system.get("wa_id") or system.get("new_wa_id"))
        new_user_id = opt_str(system.get("user_id") or system.get("new_user_id"))
        from_id = from_id or opt_str(system.get("customer")) or None
    from_id, from_user_id = complete(from_id, opt_str(item.get("from_user_id")) or None, contacts)
    if from_id is None and from_user_id is None:
        raise WebhookPayloadError(f"{where} has neither from nor from_user_id")
    context = item.get("context")
    return InboundMessage(
        message_id=req_str(item, "id", where),
        from_id=from_id,
        timestamp=read_timestamp(item.get("timestamp"), where, received_at),
        type=kind,
        phone_number_id=phone_number_id,
        text=text,
        button_payload=button_payload,
        button_text=button_text,
        interactive_reply_id=reply_id,
        interactive_reply_title=reply_title,
        context_message_id=opt_str(context.get("id")) if isinstance(context, dict) else None,
        errors=tuple(read_errors(item.get("errors"), f"{where}.errors")),
        from_user_id=from_user_id,
        interactive_type=interactive_type,
        system_type=system_type,
        new_wa_id=new_wa_id,
        new_user_id=new_user_id,
    )
