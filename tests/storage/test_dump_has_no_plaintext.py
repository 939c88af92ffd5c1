"""A database dump holds no plaintext phone number, link token, action token or sensitive inbound
text (DESIGN.md: numbers encrypted at rest, tokens stored hashed, card
numbers, SSNs and passwords never stored). SQLite is dumped with ``iterdump()``, PostgreSQL with
``pg_dump``; the real flows store the data first."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.audit.link_access import LINK_PORTS
from adapter.conversation.chat import ChatReplies
from adapter.conversation.inbound import InboundProcessor
from adapter.conversation.tables import InboundMessage
from adapter.conversation.webhook_store import store_batch
from adapter.outbox.action_tokens import mint_action_token
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import transaction, utcnow
from mappings.conversation import Conversation
from portal_links.store import LinkStore
from portal_links.tokens import LinkSigner
from tests.support.stores import outbox_store
from whatsapp.webhook import parse_webhook

PATIENT = "Patient/example-1"
AREA, EXCHANGE, LINE = "555", "010", "0123"  # a synthetic US number, +1 555 0100 123
WA_ID = f"1{AREA}{EXCHANGE}{LINE}"  # Meta's wa_id: E.164 without the plus
NATIONAL = AREA + EXCHANGE + LINE
SPELLINGS = ("+" + WA_ID, WA_ID, NATIONAL, f"+1 {AREA} {EXCHANGE} {LINE}", f"1 {AREA} {EXCHANGE} {LINE}",
             f"({AREA}) {EXCHANGE}-{LINE}", f"{AREA}-{EXCHANGE}-{LINE}", f"{AREA}.{EXCHANGE}.{LINE}",
             f"{AREA} {EXCHANGE} {LINE}", f"+1-{AREA}-{EXCHANGE}-{LINE}")
CARD = "4111 1111 1111 1111"
SSN = "123-45-6789"
PASSWORD = "Zebra-7731!"
SENSITIVE_TEXT = f"hi, my card is {CARD}, ssn {SSN} and my password is {PASSWORD}"
TEMPLATE = {"name": "appointment_reminder", "language": {"code": "en_US"}, "components": []}


def dump(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        assert database
        connection = sqlite3.connect(database)
        try:
            return "\n".join(connection.iterdump())
        finally:
            connection.close()
    pg_dump = shutil.which("pg_dump") or "/usr/bin/pg_dump"
    libpq_url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run([pg_dump, "--no-owner", "--no-privileges", "--dbname", libpq_url], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-500:]
    return done.stdout


def assert_no_plaintext(text: str, secrets: list[str]) -> None:
    folded = text.casefold()
    for secret in secrets:
        for form in (secret, secret.encode("utf-8").hex()):  # also as a hex literal (BLOB, bytea)
            assert form.casefold() not in folded, f"the dump holds a secret (form {len(form)} chars long)"


def inbound_text(body: str, wamid: str) -> dict[str, object]:
    item = {"from": WA_ID, "id": wamid, "timestamp": str(int(utcnow().timestamp())), "type": "text",
            "text": {"body": body}}
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
             "contacts": [{"profile": {"name": "Synthetic"}, "wa_id": WA_ID}], "messages": [item]}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "200000000000002", "changes": [{"field": "messages", "value": value}]}]}


def test_a_dump_holds_no_phone_number_token_or_sensitive_text(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    replies = ChatReplies(outbox, Conversation.load(), "en_US", "service_update", ["en_US", "es"])
    processor = InboundProcessor(engine, replies)
    links = LinkStore(LinkSigner(b"L" * 32), timedelta(hours=72), LINK_PORTS)

    # A notification: the contact and the outbox row (one sent, one still queued), a link and a button token.
    with transaction(engine) as session:
        set_consent(session, PATIENT, OPTED_IN, "admin")
        link_token = links.mint(session, purpose="appointment-booked", target="appointment", patient_ref=PATIENT,
                                resource_ref="Appointment/example-1", message_key="reminder:example-1")
        action_token = mint_action_token(session, action="confirm", patient_ref=PATIENT,
                                         resource_ref="Appointment/example-1", version_id="1")
        for key, due in (("reminder:example-1", utcnow() - timedelta(seconds=1)),
                         ("reminder:example-2", utcnow() + timedelta(days=1))):
            outbox.enqueue(session, natural_key=key, rule_id="reminder", resource_ref="Appointment/example-1",
                           patient_ref=PATIENT, recipient="+" + WA_ID, template=TEMPLATE, due_at=due)
    claimed = outbox.claim_due(10)
    assert [message.request["to"] for message in claimed] == ["+" + WA_ID]  # the number was stored, encrypted
    outbox.record([SendOutcome(claimed[0].outbox_id, claimed[0].attempt_id, "sent", wamid="wamid.out1",
                               answered_at=utcnow())])

    # The patient answers with a card number, an SSN and a password: stored pending, then processed.
    store_batch(engine, parse_webhook(inbound_text(SENSITIVE_TEXT, "wamid.in1")), processor.contacts)
    secrets = [*SPELLINGS, link_token, action_token, CARD, CARD.replace(" ", ""), SSN, PASSWORD]
    assert_no_plaintext(dump(engine), secrets)  # while the message waits (content encrypted, redacted)

    assert processor.process_pending() == 1
    with Session(engine) as session:
        states = {row.natural_key: row.state for row in session.exec(select(OutboxMessage)).all()}
        inbound = session.exec(select(InboundMessage)).one()
        contacts = session.exec(select(WhatsAppContact)).all()
    assert states["reminder:example-1"] == "sent" and states["reminder:example-2"] == "queued"
    assert inbound.outcome == "sensitive" and inbound.content_enc is None
    assert len(contacts) == 1 and contacts[0].last_inbound_at is not None  # the number is on file
    full = dump(engine)
    assert contacts[0].phone_enc in full  # the dump is real and holds the rows: the number, encrypted
    assert_no_plaintext(full, secrets)


def test_the_check_itself_finds_a_planted_number(engine: Engine) -> None:
    """The dump and the check see plaintext when there is some (so the test above can fail)."""
    with transaction(engine) as session:
        OutboxStore.dead_on_arrival(session, natural_key="planted", rule_id="reminder",
                                    resource_ref="Appointment/example-1", patient_ref=PATIENT,
                                    reason=f"planted {SPELLINGS[0]}")
    with pytest.raises(AssertionError, match="holds a secret"):
        assert_no_plaintext(dump(engine), [SPELLINGS[0]])
