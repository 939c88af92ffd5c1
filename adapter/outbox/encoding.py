"""How an outbox row's fields are written: the recipient's encryption context, the message body
sealed under the data key, the compact JSON of a body, and the callback data that names the row in
Meta's statuses.

A body (``payload``, and ``fallback``, the template sent instead when the 24-hour window is closed)
holds the clear button tokens and portal links, so it is stored sealed with :class:`FieldCipher`:
a dump, a backup or a read-only role yields none (DESIGN.md, invariants: no dump or backup holds a
token that still works). Both columns share the row's body context: the fallback is another body of
the same row, which the service itself moves into ``payload`` (131047 re-plan) without the key; a
body still cannot move to another row or into ``recipient_enc``. What the service reads without the
key (the body's type, its template's name and language: audit, pacing, languages) is in plain
columns (:func:`body_columns`). A body written before sealing (clear JSON, starting with ``{``) is
still read; ``bridge keys reencrypt`` seals it.

The outbox id travels as ``biz_opaque_callback_data`` (Cloud API send request), so a status can
reconcile a send whose answer was lost (DESIGN.md, invariants).
"""

from __future__ import annotations

import json
from typing import Any

from adapter.security.crypto import FieldCipher

CALLBACK_PREFIX = "outbox:"
MAX_OUTBOX_ID = 2**31 - 1  # 4-byte integer keys: a larger number names no row (PostgreSQL refuses the lookup)


def recipient_context(natural_key: str) -> str:
    return f"outbox.recipient_enc:{natural_key}"


def body_context(natural_key: str) -> str:
    return f"outbox.body:{natural_key}"


def is_clear_body(stored: str) -> bool:
    """A body written before bodies were sealed: clear JSON (a sealed one starts with ``v2.``)."""
    return stored.lstrip().startswith("{")


def seal_body(cipher: FieldCipher, natural_key: str, message: dict[str, Any]) -> str:
    return cipher.encrypt(compact_json(message), context=body_context(natural_key))


def open_body(cipher: FieldCipher, natural_key: str, stored: str | None) -> dict[str, Any]:
    """The message body of a ``payload``/``fallback`` value; ``{}`` for none. Raises
    :class:`adapter.security.crypto.DecryptionError` for a value that is not this row's body."""
    if not stored:
        return {}
    text = stored if is_clear_body(stored) else cipher.decrypt(stored, context=body_context(natural_key))
    body: dict[str, Any] = json.loads(text)
    return body


def body_columns(message: dict[str, Any] | None) -> dict[str, str | None]:
    """The plain columns that describe a body without its content: type, template name and language."""
    template = (message or {}).get("template") if (message or {}).get("type") == "template" else None
    template = template if isinstance(template, dict) else {}
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    return {"body_type": str(message["type"])[:16] if message and message.get("type") else None,
            "template_name": str(template["name"])[:512] if template.get("name") else None,
            "template_language": str(code)[:16] if code else None}


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
