"""The service's stores built with synthetic keys, for tests that do not need the whole service."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from adapter.outbox.claims import ClaimRules
from adapter.outbox.store import OutboxStore
from adapter.outbox.templates import TemplateGate
from adapter.recipients.contacts import ContactBook
from adapter.security.crypto import BlindIndex, FieldCipher

TEST_KEY = b"k" * 32


def contact_book() -> ContactBook:
    return ContactBook(BlindIndex(TEST_KEY), FieldCipher(TEST_KEY))


def outbox_store(engine: Engine, *, pair_interval_seconds: float = 6.0,
                 fallback_template: str | None = "service_update") -> OutboxStore:
    return OutboxStore(engine, contact_book(), ClaimRules(pair_interval=timedelta(seconds=pair_interval_seconds),
                                                          templates=TemplateGate(fallback_template)))
