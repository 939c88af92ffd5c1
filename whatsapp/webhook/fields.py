"""Reading the fields every webhook item shares, and the error a malformed body raises.

Meta's webhook bodies carry ids as strings or numbers, timestamps as strings of Unix seconds
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components) and ``errors[]`` items of
``{code, title, message?, error_data?: {details}}``. These readers coerce those shapes and raise
:class:`WebhookPayloadError` naming *where* a required field is wrong, never what the body contained.

What they return can always be stored, whatever a signed body holds (a leaked app secret, or a bug
at Meta, makes any signed body possible):

- every string is valid Unicode text without NUL: JSON may escape a lone surrogate (``"\\ud800"``),
  which no UTF-8 encoder accepts, and PostgreSQL's text cannot hold NUL; both become U+FFFD;
- a required string is at most ``max_chars`` long (:data:`MAX_ID_CHARS` for ids; Meta's wamids are
  about 60 characters), so an over-long id is refused instead of overflowing a column;
- integers are within a signed 32-bit range (:data:`INT32_MAX`), the range of the 4-byte integer
  columns a store keeps them in: an error code outside it is unknown (None); a timestamp that is absent
  or outside ``0..INT32_MAX`` (after 2038-01-19) is replaced by the time of receipt (:func:`read_timestamp`).
  A timestamp in range is kept as sent, even in the future: what it may open (the 24-hour window) is
  bounded by the receipt where it is used.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
MAX_ID_CHARS = 128
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates (pairs were joined by json)


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
            code=int32_or_none(code),
            title=opt_str(item.get("title") or item.get("message") or "") or "",
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


def clean_text(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD: text any store and encoder accepts."""
    if value.isascii():  # the usual case (ids, statuses), checked at C speed: surrogates are not ASCII
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    return _UNSTORABLE.sub("\ufffd", value)


def req_str(item: dict[str, Any], key: str, where: str, max_chars: int = MAX_ID_CHARS) -> str:
    """``item[key]`` as a non-empty string of at most ``max_chars`` (ids may arrive as numbers)."""
    value = item.get(key)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise WebhookPayloadError(f"{where}.{key} is missing")
    text = str(value)  # json.loads refuses numbers over 4300 digits, so str() of one is cheap
    if len(text) > max_chars:
        raise WebhookPayloadError(f"{where}.{key} is longer than {max_chars} characters")
    return clean_text(text)


def opt_str(value: Any) -> str | None:
    return None if value is None else clean_text(str(value))


def int_or_none(value: Any) -> int | None:
    """``value`` as an int (a number, or a string of digits), or None; floats are truncated."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
        return None


def int32_or_none(value: Any) -> int | None:
    """Like :func:`int_or_none`, and None outside the signed 32-bit range."""
    number = int_or_none(value)
    return number if number is not None and -INT32_MAX - 1 <= number <= INT32_MAX else None


def read_timestamp(value: Any, where: str, received_at: int) -> int:
    """A ``timestamp`` field (string of Unix seconds) as an int. One that is not a number refuses the
    item; one that is absent, or outside ``0..INT32_MAX``, cannot be a time Meta saw (and would not fit a
    4-byte column), so the time of receipt stands in for it, with a log line naming where (never the value)."""
    if value is None:
        log.warning("webhook %s.timestamp is missing; the time of receipt is used", where)
        return received_at
    number = int_or_none(value)
    if number is None:
        raise WebhookPayloadError(f"{where}.timestamp is not Unix seconds")
    if not 0 <= number <= INT32_MAX:
        log.warning("webhook %s.timestamp is out of range; the time of receipt is used", where)
        return received_at
    return number
