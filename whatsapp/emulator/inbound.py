"""``POST /_emulator/inbound``: a user writes, taps a button, picks a list row, or changes number.

Request body (JSON object; the older shapes ``{"from", "text"}``, ``{"from", "button": {...}}`` and
``{"from", "interactive_reply": {...}}`` keep working)::

    from            the user's number (any format; digits are kept) — optional only with bsuid_only + from_user_id
    text            "…"                                     → type text
    button          {"payload", "text"}                     → type button (template quick-reply tap)
    button_reply    {"id", "title"}   (alias: interactive_reply)   → type interactive / button_reply
    list_reply      {"id", "title", "description"?}         → type interactive / list_reply
    system          {"type": "user_changed_number", "new_wa_id"} → type system
    context         wamid of the message replied to (taps usually carry it; optional)
    age_seconds     the user wrote this N seconds ago on the virtual clock (timestamp and window use that)
    bsuid_only      true: the sender shares no phone number (no ``from``/``wa_id``, only BSUIDs)
    from_user_id    the sender's BSUID (default: derived from ``from``)
    profile_name, phone_number_id

Shapes follow Meta's "Incoming messages webhook reference" pages (text, button, interactive, system) and
"Business-scoped user IDs": with BSUIDs on, ``messages[].from_user_id`` and ``contacts[].user_id`` come with
``from``/``wa_id``; a username-only sender has the BSUID fields only. System messages carry no ``contacts``;
``system.wa_id`` is the new number's WhatsApp id (current reference), ``new_wa_id`` its name before Graph
v12, kept for readers of either. A user's message (not a system one) opens the 24-hour window at its
timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.payloads import bsuid_for


@dataclass(frozen=True)
class Inbound:
    """What the app needs to post the webhook and open the window."""

    value: dict[str, Any]  # the ``value`` of the messages change: contacts? + messages
    message_id: str
    type: str
    wa_id: str | None
    user_id: str | None
    phone_number_id: str
    timestamp: int
    opens_window: bool


def _digits(raw: Any) -> str:
    return "".join(ch for ch in str(raw) if ch.isdigit())


def build_inbound(raw: Any, config: EmulatorConfig, wamid: str, now: float, bsuid_enabled: bool) -> Inbound:
    """Raises ValueError/KeyError/TypeError (→ 422) on a body it cannot turn into a message."""
    if not isinstance(raw, dict):
        raise TypeError("expected a JSON object")
    bsuid_only = bool(raw.get("bsuid_only", False))
    wa_id = _digits(raw["from"]) if raw.get("from") is not None else None
    if wa_id == "" or (wa_id is None and not (bsuid_only and raw.get("from_user_id"))):
        raise ValueError("'from' must be a phone number (or use bsuid_only with from_user_id)")
    user_id: str | None = None
    if bsuid_enabled or bsuid_only:
        user_id = str(raw["from_user_id"]) if raw.get("from_user_id") else bsuid_for(str(wa_id), config.waba_id)
    phone_number_id = str(raw.get("phone_number_id") or next(iter(config.phone_numbers)))
    if phone_number_id not in config.phone_numbers:
        raise ValueError(f"unknown phone_number_id {phone_number_id}")
    age = float(raw.get("age_seconds", 0))
    if age < 0:
        raise ValueError("age_seconds cannot be negative")
    timestamp = int(now - age)
    item: dict[str, Any] = {}
    if wa_id is not None and not bsuid_only:
        item["from"] = wa_id
    if user_id is not None:
        item["from_user_id"] = user_id
    item.update(id=wamid, timestamp=str(timestamp))
    kind = _content(raw, item, wa_id, str(raw.get("profile_name", "Test User")), config.waba_id)
    if raw.get("context"):
        item["context"] = {"from": config.phone_numbers[phone_number_id], "id": str(raw["context"])}
    value: dict[str, Any] = {"messages": [item]}
    if kind != "system":  # Meta: system messages have no contacts array
        contact: dict[str, Any] = {"profile": {"name": str(raw.get("profile_name", "Test User"))}}
        if wa_id is not None and not bsuid_only:
            contact["wa_id"] = wa_id
        if user_id is not None:
            contact["user_id"] = user_id
        value = {"contacts": [contact], **value}
    return Inbound(value=value, message_id=wamid, type=kind, wa_id=wa_id, user_id=user_id,
                   phone_number_id=phone_number_id, timestamp=timestamp, opens_window=kind != "system")


def _content(raw: dict[str, Any], item: dict[str, Any], wa_id: str | None, profile_name: str,
             business_id: str) -> str:
    """Fills the type-specific part of ``item``; returns the type."""
    if "button" in raw:
        button = raw["button"]
        item.update(type="button", button={"payload": str(button["payload"]), "text": str(button.get("text", ""))})
        return "button"
    reply = raw.get("button_reply") or raw.get("interactive_reply")
    if reply is not None:
        item.update(type="interactive", interactive={
            "type": "button_reply", "button_reply": {"id": str(reply["id"]), "title": str(reply.get("title", ""))}})
        return "interactive"
    if "list_reply" in raw:
        row = raw["list_reply"]
        chosen = {"id": str(row["id"]), "title": str(row.get("title", ""))}
        if row.get("description") is not None:
            chosen["description"] = str(row["description"])
        item.update(type="interactive", interactive={"type": "list_reply", "list_reply": chosen})
        return "interactive"
    if "system" in raw:
        system = raw["system"]
        if system.get("type") != "user_changed_number":
            raise ValueError("system.type must be user_changed_number")
        new_wa_id = _digits(system["new_wa_id"])
        if not new_wa_id:
            raise ValueError("system.new_wa_id must be a phone number")
        body = f"User {profile_name} changed from {wa_id} to {new_wa_id}"
        content: dict[str, Any] = {"body": body, "wa_id": new_wa_id, "new_wa_id": new_wa_id,
                                   "type": "user_changed_number"}
        if "from_user_id" in item:  # a number change also regenerates the BSUID
            content["previous_user_id"] = item["from_user_id"]
            content["user_id"] = bsuid_for(new_wa_id, business_id)
        item.update(type="system", system=content)
        return "system"
    item.update(type="text", text={"body": str(raw["text"])})
    return "text"
