"""How an outbox row's fields are written: the recipient's encryption context, the compact JSON of a
message body, and the callback data that names the row in Meta's statuses.

The outbox id travels as ``biz_opaque_callback_data`` (Cloud API send request), so a status can
reconcile a send whose answer was lost (DESIGN.md, invariants).
"""

from __future__ import annotations

import json
from typing import Any

CALLBACK_PREFIX = "outbox:"
MAX_OUTBOX_ID = 2**31 - 1  # 4-byte integer keys: a larger number names no row (PostgreSQL refuses the lookup)


def recipient_context(natural_key: str) -> str:
    return f"outbox.recipient_enc:{natural_key}"


def callback_data(outbox_id: int) -> str:
    return f"{CALLBACK_PREFIX}{outbox_id}"


def outbox_id_from_callback(data: str | None) -> int | None:
    """The outbox id our callback data names; None for another form or an id no row can have."""
    digits = data[len(CALLBACK_PREFIX):] if data and data.startswith(CALLBACK_PREFIX) else ""
    if digits.isascii() and digits.isdigit() and int(digits) <= MAX_OUTBOX_ID:  # isdigit alone takes "²"
        return int(digits)
    return None


def compact_json(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
