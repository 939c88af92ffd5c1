"""Reading the fields every webhook item shares, and the error a malformed body raises.

Meta's webhook bodies carry ids as strings or numbers, timestamps as strings of Unix seconds
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components) and ``errors[]`` items of
``{code, title, message?, error_data?: {details}}``. These readers coerce those shapes and raise
:class:`WebhookPayloadError` naming *where* a required field is wrong, never what the body contained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class WebhookPayloadError(ValueError):
    """The body is not a WhatsApp Business Account webhook (message says where, never the content)."""


@dataclass(frozen=True, slots=True)
class WebhookErrorItem:
    """One ``errors[]`` item: Meta's code and title (details kept for dead letters)."""

    code: int | None
    title: str
    details: str | None = None


def read_errors(raw: Any, where: str) -> list[WebhookErrorItem]:
    """The ``errors[]`` items of a value, status or message; items that are not objects are skipped."""
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
            code=code if isinstance(code, int) and not isinstance(code, bool) else int_or_none(code),
            title=str(item.get("title") or item.get("message") or ""),
            details=opt_str(details),
        ))
    return found


def list_field(value: dict[str, Any], key: str, where: str) -> list[Any]:
    """``value[key]`` as a list (empty when absent)."""
    items = value.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise WebhookPayloadError(f"{where}.value.{key} is not a list")
    return items


def sub_object(item: dict[str, Any], key: str) -> dict[str, Any]:
    """``item[key]`` when it is an object, else an empty one."""
    sub = item.get(key)
    return sub if isinstance(sub, dict) else {}


def req_str(item: dict[str, Any], key: str, where: str) -> str:
    """``item[key]`` as a non-empty string (ids may arrive as numbers)."""
    value = item.get(key)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise WebhookPayloadError(f"{where}.{key} is missing")
    return str(value)


def opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_timestamp(value: Any, where: str) -> int:
    """A ``timestamp`` field (string of Unix seconds) as an int."""
    number = int_or_none(value) if not isinstance(value, bool) else None
    if number is None:
        raise WebhookPayloadError(f"{where}.timestamp is not Unix seconds")
    return number
