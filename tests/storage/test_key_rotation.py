"""Key rotation on both databases, run online: every value ends under the new data key, every blind
index under the new index key, every contact stays findable, the old key can then be retired, and
each run is audited."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from adapter.audit.tables import AuditEvent
from adapter.cli.keys import keys_app
from adapter.conversation.chat import conversation_of
from adapter.conversation.content import content_context
from adapter.conversation.tables import ActionRequest, Conversation, InboundMessage
from adapter.maintenance.key_usage import key_usage
from adapter.maintenance.reencrypt import reencrypt
from adapter.maintenance.reindex import reindex
from adapter.outbox.claims import ClaimRules
from adapter.outbox.encoding import recipient_context
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage, RecipientPace, WhatsAppStatus
from adapter.outbox.templates import TemplateGate
from adapter.recipients.contacts import ContactBook, legacy_phone_context
from adapter.recipients.tables import WhatsAppContact
from adapter.security.crypto import (
    BlindIndex,
    DecryptionError,
    FieldCipher,
    KeySet,
    KeySource,
    StaticKeys,
    b64,
    data_key_id,
    legacy_index_key,
    unb64,
)
from adapter.security.keys import Keyring, LocalWrappingKey
from adapter.storage.db import table_of, transaction, utcnow

PATIENTS = 7


def number(i: int) -> str:
    return f"+1555010{i:04d}"


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    return Keyring.create(tmp_path / "keyring.json", LocalWrappingKey(os.urandom(32)))


def book(keys: KeySource) -> ContactBook:
    return ContactBook(BlindIndex(keys), FieldCipher(keys))


def seed(engine: Engine, keys: KeySource) -> None:
    """Every table that holds an encrypted value or a blind index gets rows, through the real stores."""
    contacts = book(keys)
    store = OutboxStore(engine, contacts, ClaimRules(pair_interval=timedelta(seconds=6),
                                                     templates=TemplateGate(None)))
    with transaction(engine) as session:
        for i in range(PATIENTS):
            ref = f"Patient/example-{i}"
            store.enqueue_message(session, natural_key=f"notify:{i}", rule_id="test",
                                  resource_ref=f"Appointment/example-{i}", patient_ref=ref, recipient=number(i),
                                  message={"type": "text", "text": "hello"}, due_at=utcnow())
            found = contacts.find(session, phone=number(i))
            key = found[0].phone_index
            contacts.link_user_id(session, found, f"US.{i}")
            conversation_of(session, key)
            session.add(RecipientPace(recipient_key=key, next_send_at=utcnow()))
            session.add(ActionRequest(dedupe_key=f"action:{i}", kind="confirm", patient_ref=ref, phone_index=key,
                                      language="en_US", next_attempt_at=utcnow(), created_at=utcnow()))
            session.add(WhatsAppStatus(dedupe_key=f"wamid.out.{i}:sent", wamid=f"wamid.out.{i}", status="sent",
                                       meta_timestamp=1, user_id_index=contacts.index.user_id(f"US.{i}"),
                                       received_at=utcnow()))
            session.add(InboundMessage(wamid=f"wamid.in.{i}", message_type="text", meta_timestamp=1,
                                       received_at=utcnow(), content_enc=contacts.cipher.encrypt(
                                           '{"text": "hi"}', context=content_context(f"wamid.in.{i}"))))


def all_readable(engine: Engine, keys: KeySource) -> None:
    contacts = book(keys)
    with Session(engine) as session:
        for i in range(PATIENTS):
            found = contacts.find(session, phone=number(i))
            assert [c.patient_ref for c in found] == [f"Patient/example-{i}"]
            assert contacts.phone_of(found[0]) == number(i)
        for row in session.exec(select(OutboxMessage)):
            assert contacts.cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key))
        for inbound in session.exec(select(InboundMessage)):
            assert contacts.cipher.decrypt(inbound.content_enc or "", context=content_context(inbound.wamid))


def audited(engine: Engine, job: str) -> int:
    with Session(engine) as session:
        return sum(1 for e in session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "key-rotation"))
                   if e.detail and f'"job":"{job}"' in e.detail)


def test_data_key_rotation_rewrites_every_value_and_the_old_key_can_be_retired(engine: Engine, ring: Keyring) -> None:
    seed(engine, ring)
    old = ring.current().active_data
    indexes_before = key_usage(engine)[ring.current().active_index]
    assert key_usage(engine)[old] == 4 * PATIENTS  # numbers, recipients, message bodies, inbound contents
    new = ring.rotate("data")
    all_readable(engine, ring)  # mid-rotation: old values still read
    counts = reencrypt(engine, ring, batch_size=3)
    assert counts == {"wa_contact.phone_enc": PATIENTS, "outbox.recipient_enc": PATIENTS, "outbox.payload": PATIENTS,
                      "outbox.fallback": 0, "wa_inbound.content_enc": PATIENTS, "failed": 0}
    usage = key_usage(engine)
    assert old not in usage and usage[new] == 4 * PATIENTS
    assert usage[ring.current().active_index] == indexes_before  # the blind indexes did not move
    assert reencrypt(engine, ring, batch_size=3)["wa_contact.phone_enc"] == 0  # idempotent
    assert audited(engine, "reencrypt") == 2
    ring.retire(old)
    all_readable(engine, Keyring.load(ring.path, ring.wrapper))


def test_a_number_moved_to_another_row_of_the_same_patient_does_not_decrypt(engine: Engine, ring: Keyring) -> None:
    contacts = book(ring)
    with transaction(engine) as session:
        contacts.remember(session, "Patient/example-1", number(1))
        contacts.remember(session, "Patient/example-1", number(2))
    with Session(engine) as session:
        first, second = session.exec(select(WhatsAppContact).order_by(col(WhatsAppContact.id))).all()
    with transaction(engine) as session:
        table = table_of(WhatsAppContact)
        session.execute(update(table).where(table.c.id == first.id).values(phone_enc=second.phone_enc))
    with Session(engine) as session:
        moved = session.get(WhatsAppContact, first.id)
        assert moved is not None
        with pytest.raises(DecryptionError):
            contacts.phone_of(moved)


def rows_under(engine: Engine, model: type, column: str, tag: str) -> int:
    with Session(engine) as session:
        return sum(1 for value in session.exec(select(getattr(model, column))) if value and value[:4].hex() == tag)


def test_index_rotation_keeps_every_contact_findable_during_and_after(engine: Engine, ring: Keyring) -> None:
    seed(engine, ring)
    old = ring.current().active_index
    data_before = key_usage(engine)[ring.current().active_data]
    new = ring.rotate("index")
    all_readable(engine, ring)  # during: found under the old index
    contacts = book(ring)
    with transaction(engine) as session:  # a write during the rotation keeps the number's rows together
        contacts.remember(session, "Patient/example-99", number(1))
    with Session(engine) as session:
        assert len({c.phone_index for c in contacts.find(session, phone=number(1))}) == 1
    counts = reindex(engine, ring, batch_size=2)
    assert counts["contacts"] == PATIENTS + 1 and counts["user_ids_cleared"] == PATIENTS  # the statuses'
    assert rows_under(engine, WhatsAppContact, "user_id_index", old) == 0  # cleared with each contact
    all_readable_after = key_usage(engine)
    assert old not in all_readable_after and data_before <= all_readable_after[ring.current().active_data]
    for model, column in ((WhatsAppContact, "phone_index"), (Conversation, "phone_index"),
                          (RecipientPace, "recipient_key"), (ActionRequest, "phone_index"),
                          (OutboxMessage, "recipient_key")):
        assert rows_under(engine, model, column, new) >= PATIENTS, (model, column)
    with Session(engine) as session:
        for i in range(PATIENTS):
            found = contacts.find(session, phone=number(i))
            assert found and all(c.phone_index == contacts.index.phone(number(i)) for c in found)
            assert session.get(Conversation, found[0].phone_index) is not None
    with transaction(engine) as session:  # user ids come back with the next message that carries them
        contacts.link_user_id(session, contacts.find(session, phone=number(3)), "US.3")
    with Session(engine) as session:
        assert [c.patient_ref for c in contacts.find(session, user_id="US.3")] == ["Patient/example-3"]
    assert reindex(engine, ring)["contacts"] == 0 and audited(engine, "reindex") == 2
    ring.retire(old)


def test_rows_written_by_earlier_versions_are_upgraded(engine: Engine) -> None:
    """Before separate index keys: v1 values bound to the patient only, untagged indexes derived from
    the data key. They stay readable and findable, and re-encryption and re-indexing upgrade them."""
    data_key, index_key = os.urandom(32), os.urandom(32)
    phone_text = "phone:" + number(5).lstrip("+")
    untagged = hmac.new(legacy_index_key(data_key), phone_text.encode(), hashlib.sha256).digest()
    nonce = os.urandom(12)
    sealed = AESGCM(data_key).encrypt(nonce, number(5).encode(), legacy_phone_context("Patient/example-5").encode())
    with transaction(engine) as session:
        session.add(WhatsAppContact(patient_ref="Patient/example-5", phone_index=untagged, updated_at=utcnow(),
                                    phone_enc=f"v1.{data_key_id(data_key)}.{b64(nonce)}.{b64(sealed)}"))
    keys = StaticKeys(KeySet.of([data_key], [index_key], legacy=True))
    contacts = book(keys)
    with Session(engine) as session:
        assert contacts.phone_of(contacts.find(session, phone=number(5))[0]) == number(5)
    assert reencrypt(engine, keys)["wa_contact.phone_enc"] == 1
    assert reindex(engine, keys)["contacts"] == 1
    with Session(engine) as session:
        row = contacts.find(session, phone=number(5))[0]
        assert row.phone_index == contacts.index.phone(number(5)) and row.phone_enc.startswith("v2.")
        assert contacts.phone_of(row) == number(5)


def test_the_cli_shows_ids_never_keys_and_retires_only_unused_keys(engine: Engine, database_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kek = b64(os.urandom(32))
    keyring = tmp_path / "keyring.json"
    for name, value in (("MODE", "demo"), ("DATABASE_URL", database_url), ("KEYRING_FILE", str(keyring)),
                        ("KEY_WRAPPING_KEY", kek)):
        monkeypatch.setenv(f"BRIDGE_{name}", value)
    monkeypatch.setattr("adapter.cli.keys.GRACE_SECONDS", 0.0)
    runner = CliRunner()
    created = runner.invoke(keys_app, ["init-keyring"])
    assert created.exit_code == 0, created.output
    ring = Keyring.load(keyring, LocalWrappingKey(unb64(kek)))
    seed(engine, ring)
    old = ring.current().active_data
    assert runner.invoke(keys_app, ["retire", old]).exit_code != 0  # still active
    rotated = runner.invoke(keys_app, ["rotate", "data", "--batch-size", "2"])
    assert rotated.exit_code == 0 and '"wa_contact.phone_enc": 7' in rotated.output, rotated.output
    status = runner.invoke(keys_app, ["status"])
    assert status.exit_code == 0 and old not in status.output.split("rows per key id")[1]
    for key in (*ring.current().data.values(), unb64(kek)):
        assert b64(key) not in status.output + rotated.output + created.output
    assert runner.invoke(keys_app, ["retire", old]).exit_code == 0
    assert audited(engine, "retire") == 2  # the refusal and the retirement
    monkeypatch.delenv("BRIDGE_KEYRING_FILE")
    explained = runner.invoke(keys_app, ["rotate", "index"])
    assert explained.exit_code == 0 and "BRIDGE_BLIND_INDEX_KEYS_PREVIOUS" in explained.output
