"""Outbox message bodies are sealed under the data key (adapter.outbox.encoding; DESIGN.md, invariants:
no dump or backup holds a token that still works): bodies written in clear before (migration 0015)
are still read and sent, and data-key re-encryption seals them; a sealed body does not open in
another row or as another column."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.maintenance.key_usage import usage_by_column
from adapter.maintenance.reencrypt import reencrypt
from adapter.outbox.encoding import body_context, open_body, recipient_context, seal_body
from adapter.outbox.tables import OutboxMessage
from adapter.security.crypto import DecryptionError, FieldCipher, KeySet, StaticKeys, legacy_index_key
from adapter.storage.db import alembic_config, make_engine, transaction, upgrade, utcnow
from tests.support.stores import TEST_KEY, outbox_store

BUTTON = "synthetic-button-tkn-0001"  # stands for a quick-reply token
TEMPLATE = {"name": "appointment_confirmation", "language": {"code": "es"},
            "components": [{"type": "button", "sub_type": "quick_reply", "index": "0",
                            "parameters": [{"type": "payload", "payload": BUTTON}]}]}


def _at_0014(database_url: str) -> Engine:
    engine = make_engine(database_url)
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0014")
    return engine


def test_a_clear_body_from_before_is_described_sent_and_then_sealed(database_url: str) -> None:
    engine = _at_0014(database_url)
    cipher, now = FieldCipher(TEST_KEY), utcnow()
    with engine.begin() as connection:  # a row as the earlier version wrote it: the body in clear JSON
        outbox = sa.Table("outbox", sa.MetaData(), autoload_with=connection)
        connection.execute(outbox.insert().values(
            natural_key="legacy:1", rule_id="booked", resource_ref="Appointment/a1", patient_ref="Patient/p1",
            recipient_enc=cipher.encrypt("+12015550101", context=recipient_context("legacy:1")),
            payload=json.dumps({"type": "template", "template": TEMPLATE}), state="queued",
            due_at=now - timedelta(seconds=1), attempts=0, created_at=now, updated_at=now, purpose="notify"))
    upgrade(engine)
    with Session(engine) as session:
        row = session.exec(select(OutboxMessage)).one()
    assert (row.body_type, row.template_name, row.template_language) == ("template", "appointment_confirmation", "es")
    assert usage_by_column(engine)["outbox.payload"] == {"clear": 1}
    assert open_body(cipher, row.natural_key, row.payload)["template"] == TEMPLATE  # read as it is

    keys = StaticKeys(KeySet.of([TEST_KEY], [legacy_index_key(TEST_KEY)]))
    assert reencrypt(engine, keys)["outbox.payload"] == 1
    with Session(engine) as session:
        sealed = session.exec(select(OutboxMessage)).one()
    assert sealed.payload is not None and BUTTON not in sealed.payload and sealed.payload.startswith("v2.")
    assert usage_by_column(engine)["outbox.payload"] == {cipher.key_id: 1}
    [claimed] = outbox_store(engine, pair_interval_seconds=0, fallback_template=None).claim_due(10)
    assert claimed.request["template"] == TEMPLATE and claimed.request["to"] == "+12015550101"
    engine.dispose()


def test_a_sealed_body_opens_only_in_its_own_row() -> None:
    cipher = FieldCipher(TEST_KEY)
    sealed = seal_body(cipher, "row:1", {"type": "template", "template": TEMPLATE})
    assert open_body(cipher, "row:1", sealed)["template"] == TEMPLATE
    with pytest.raises(DecryptionError):
        open_body(cipher, "row:2", sealed)  # copied to another row
    number = cipher.encrypt("+12015550101", context=recipient_context("row:1"))
    with pytest.raises(DecryptionError):
        open_body(cipher, "row:1", number)  # the recipient column's value put in the body
    with pytest.raises(DecryptionError):
        cipher.decrypt(sealed, context=recipient_context("row:1"))  # and the other way round
    assert body_context("row:1") != recipient_context("row:1")


def test_new_rows_are_written_sealed_with_their_plain_description(engine: Engine) -> None:
    store = outbox_store(engine)
    with transaction(engine) as session:
        store.enqueue_message(session, natural_key="chat:1", rule_id="chat", resource_ref="Patient/p1",
                              patient_ref="Patient/p1", recipient="+12015550101",
                              message={"type": "text", "text": {"body": "hello"}}, due_at=utcnow(),
                              fallback=TEMPLATE)
    with Session(engine) as session:
        row = session.exec(select(OutboxMessage)).one()
    assert (row.body_type, row.template_name, row.template_language) == ("text", None, None)
    for stored in (row.payload, row.fallback):
        assert stored is not None and stored.startswith("v2.") and BUTTON not in stored and "hello" not in stored
    assert open_body(store.cipher, row.natural_key, row.fallback)["template"] == TEMPLATE
