"""An inbound message's content as stored until it is processed: encrypted, and with card numbers,
SSNs and passwords already removed (:mod:`mappings.redact`), so they never reach the database in any
form. The ciphertext is bound to the message id (the row's encryption context); the content is
dropped once the message is processed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from adapter.conversation.tables import InboundMessage
from adapter.security.crypto import FieldCipher
from mappings.redact import redact
from whatsapp.webhook import InboundMessage as ParsedInbound


def content_context(wamid: str) -> str:
    return f"wa_inbound.content_enc:{wamid}"


@dataclass(frozen=True)
class InboundContent:
    """What processing needs from a message (never logged)."""

    from_id: str | None
    from_user_id: str | None
    type: str
    text: str | None = None
    payload: str | None = None  # quick-reply payload or interactive reply id
    context_id: str | None = None
    system_type: str | None = None
    new_wa_id: str | None = None
    new_user_id: str | None = None
    sensitive: tuple[str, ...] = ()  # kinds of what was redacted before storing ("card", "ssn", …)


def encode_content(cipher: FieldCipher, message: ParsedInbound) -> str:
    """The message as stored: encrypted, and with card numbers, SSNs and passwords already removed
    (they never reach the database, in any form)."""
    text, found = redact(message.text) if message.text else (message.text, [])
    content = InboundContent(
        from_id=message.from_id, from_user_id=message.from_user_id, type=message.type, text=text,
        payload=message.button_payload or message.interactive_reply_id, context_id=message.context_message_id,
        system_type=message.system_type, new_wa_id=message.new_wa_id, new_user_id=message.new_user_id,
        sensitive=tuple(found))
    return cipher.encrypt(json.dumps(asdict(content), ensure_ascii=False), context=content_context(message.message_id))


def decode_content(cipher: FieldCipher, row: InboundMessage) -> InboundContent:
    raw = json.loads(cipher.decrypt(row.content_enc or "", context=content_context(row.wamid)))
    raw["sensitive"] = tuple(raw.get("sensitive") or ())
    return InboundContent(**raw)
