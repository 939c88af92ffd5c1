"""Deciding stored HL7 messages with the service's own decide step (no network: the patient comes from
PID), on both databases: an S12 and the S13 that moved it, processed in one batch, are decided as the
appointment stands (one confirmation, the reminders at the S13's start), as a FHIR event is decided on
the current version; a batch processed again after a crash (messages still pending) repeats nothing."""

from __future__ import annotations

import asyncio

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.feeds.hl7_store import Hl7MessageStore
from adapter.feeds.hl7_tables import Hl7Message
from adapter.hl7.processor import Hl7Processor
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.service import build_service
from adapter.settings import load_settings
from adapter.storage.db import table_of, transaction
from ehr.hl7.config import load_config
from ehr.hl7.messages import parse_message
from tests.ehr.hl7.conftest import siu


def outbox(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        return [(row.rule_id, row.natural_key) for row in session.execute(
            select(OutboxMessage).where(OutboxMessage.state == "queued").order_by(OutboxMessage.id)).scalars()]


def test_messages_are_decided_once_in_their_original_order(database_url: str, engine: Engine) -> None:
    service = build_service(load_settings(mode="demo", database_url=database_url, consent_source="registry"),
                            engine=engine)
    config = load_config({})
    store = Hl7MessageStore(engine, service.cipher)
    with transaction(engine) as session:
        set_consent(session, "Patient/SYN-MRN-7", OPTED_IN, "admin")
    for raw in (siu("S12", control_id="C-1", start="20261215103000"),
                siu("S13", control_id="C-2", sent="20261201100000", start="20261218103000")):
        store.store_now(parse_message(raw, config))
    messages = table_of(Hl7Message)
    with Session(engine) as session:
        raw = dict(session.execute(select(messages.c.id, messages.c.raw_enc)).all())
    processor = Hl7Processor(engine, service.cipher, config, service.decider)
    assert asyncio.run(processor.run_once()) == 2
    queued = outbox(engine)
    assert [rule for rule, _ in queued].count("appointment-booked-confirmation") == 1
    reminders = [key for rule, key in queued if rule == "appointment-booked-confirmation-reminder"]
    assert reminders and all("20261218T1030Z" in key for key in reminders)  # the S13's start, not the S12's
    # A crash after the decide transaction, before the messages were finished: they come back.
    with transaction(engine) as session:  # as they were when the decide transaction committed
        for message_id, sealed in raw.items():
            session.execute(update(messages).where(messages.c.id == message_id)
                            .values(state="pending", lease_until=None, raw_enc=sealed))
    assert asyncio.run(processor.run_once()) == 2
    assert outbox(engine) == queued
    with Session(engine) as session:
        assert set(session.execute(select(Hl7Message.state, Hl7Message.raw_enc)).all()) == {("done", "")}
