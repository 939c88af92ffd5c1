"""Which columns hold values made with a key — encrypted values (data key) and blind indexes (index
key) — and how many rows each key id has in them, so an operator can see when an old key may be retired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine, Row
from sqlmodel import Session, SQLModel

from adapter.conversation.content import content_context
from adapter.conversation.tables import ActionRequest, Conversation, InboundMessage
from adapter.outbox.encoding import body_context, recipient_context
from adapter.outbox.tables import OutboxMessage, RecipientPace, WhatsAppStatus
from adapter.recipients.contacts import legacy_phone_context, phone_context
from adapter.recipients.tables import WhatsAppContact
from adapter.security.crypto import TAG_BYTES
from adapter.storage.db import table_of


@dataclass(frozen=True)
class EncryptedColumn:
    model: type[SQLModel]
    column: str
    context: Callable[[Row[Any]], str]
    legacy_context: Callable[[Row[Any]], str | None] = lambda row: None
    # Values written in clear before the column was sealed (JSON, starting with "{"): read as they are,
    # sealed by re-encryption, counted as "clear".
    clear_legacy: bool = False


ENCRYPTED = (
    EncryptedColumn(WhatsAppContact, "phone_enc", lambda r: phone_context(r.patient_ref, r.phone_index),
                    lambda r: legacy_phone_context(r.patient_ref)),
    EncryptedColumn(OutboxMessage, "recipient_enc", lambda r: recipient_context(r.natural_key)),
    EncryptedColumn(OutboxMessage, "payload", lambda r: body_context(r.natural_key), clear_legacy=True),
    EncryptedColumn(OutboxMessage, "fallback", lambda r: body_context(r.natural_key), clear_legacy=True),
    EncryptedColumn(InboundMessage, "content_enc", lambda r: content_context(r.wamid)),
)
# Every column holding a blind index (table model, column).
INDEXED: tuple[tuple[type[SQLModel], str], ...] = (
    (WhatsAppContact, "phone_index"), (WhatsAppContact, "user_id_index"), (Conversation, "phone_index"),
    (ActionRequest, "phone_index"), (RecipientPace, "recipient_key"), (OutboxMessage, "recipient_key"),
    (WhatsAppStatus, "user_id_index"))


def usage_by_column(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows per key id, per column: data key ids of encrypted values (``v1:`` marks the old format,
    ``clear`` a body written before bodies were sealed), index key ids (the 4-byte tag, in hex) of blind indexes."""
    usage: dict[str, dict[str, int]] = {}
    with Session(engine) as session:
        for spec in ENCRYPTED:
            table = table_of(spec.model)
            value = table.c[spec.column]
            head = func.substr(value, 1, 11)
            found = usage.setdefault(f"{table.name}.{spec.column}", {})
            for prefix, rows in session.execute(select(head, func.count()).where(value.is_not(None))
                                                .group_by(head)).all():
                version, _, key_id = str(prefix).partition(".")
                name = key_id if version == "v2" else f"v1:{key_id}" if version == "v1" else "clear"
                found[name] = found.get(name, 0) + int(rows)
        for model, column in INDEXED:
            table = table_of(model)
            head = func.substr(table.c[column], 1, TAG_BYTES)
            found = usage.setdefault(f"{table.name}.{column}", {})
            for prefix, rows in session.execute(select(head, func.count()).where(table.c[column].is_not(None))
                                                .group_by(head)).all():
                found[bytes(prefix).hex()] = found.get(bytes(prefix).hex(), 0) + int(rows)
    return usage


def key_usage(engine: Engine, known: Iterable[str] | None = None) -> dict[str, int]:
    """Rows per key id over every column. With ``known`` ids, any other id (an index made by an
    earlier version, untagged) is counted under ``"unknown"``."""
    names = set(known) if known is not None else None
    total: dict[str, int] = {}
    for column in usage_by_column(engine).values():
        for key_id, rows in column.items():
            name = key_id.removeprefix("v1:")
            if names is not None and name not in names:
                name = "unknown"
            total[name] = total.get(name, 0) + rows
    return total
