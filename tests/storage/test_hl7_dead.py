"""Dead HL7 messages on both databases: a stored message that can no longer be processed (its field
positions changed), or whose deciding failed on the last attempt, goes ``dead`` with one operator
alert naming it (never its content); ``bridge hl7 dead list`` shows it and ``bridge hl7 dead retry``
queues it again once the cause is fixed (audited, the alert closed); a message whose text retention
removed is refused."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from typer.testing import CliRunner

from adapter.audit.tables import AuditEvent
from adapter.cli.hl7 import hl7_app
from adapter.demo.sandbox_ehr import free_port
from adapter.feeds.hl7_store import Hl7MessageStore
from adapter.feeds.hl7_tables import Hl7Message
from adapter.hl7.processor import MAX_ATTEMPTS, Hl7Processor
from adapter.ops.tables import OperatorAlert
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.service import Service, build_service
from adapter.settings import load_settings
from adapter.storage.db import table_of, transaction
from ehr.client import FhirClient
from ehr.hl7.config import load_config
from ehr.hl7.messages import parse_message
from tests.ehr.hl7.conftest import PHONE, siu

# The sending system moved its filler id after the message was stored: SCH-20 is empty.
MOVED = load_config({"facilities": {"SYNFAC": {"filler_id": "SCH-20"}}})


@pytest.fixture
def service(database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", database_url)
    with transaction(engine) as session:
        set_consent(session, "Patient/SYN-MRN-7", OPTED_IN, "admin")
    return build_service(load_settings(mode="demo", database_url=database_url, consent_source="registry"),
                         engine=engine)


def stored(service: Service, control_id: str) -> int:
    Hl7MessageStore(service.engine, service.cipher).store_now(parse_message(siu(control_id=control_id),
                                                                            load_config({})))
    with Session(service.engine) as session:
        found = session.execute(select(col(Hl7Message.id)).where(col(Hl7Message.control_id) == control_id))
        return int(found.scalar_one())


def message(engine: Engine, message_id: int) -> Hl7Message:
    with Session(engine) as session:
        row = session.get(Hl7Message, message_id)
        assert row is not None
        return row


def alerts(engine: Engine) -> list[OperatorAlert]:
    with Session(engine) as session:
        return list(session.execute(select(OperatorAlert).where(col(OperatorAlert.kind) == "hl7_dead")).scalars())


def test_a_dead_message_is_alerted_listed_and_retried_once_fixed(service: Service) -> None:
    engine = service.engine
    message_id = stored(service, "C-DEAD")
    assert asyncio.run(Hl7Processor(engine, service.cipher, MOVED, service.decider).run_once()) == 1
    dead = message(engine, message_id)
    assert (dead.state, dead.last_error) == ("dead", "MissingFieldError") and dead.raw_enc
    [alert] = alerts(engine)
    assert f"bridge hl7 dead retry {message_id}" in alert.detail and "MSH-10 C-DEAD" in alert.detail
    assert PHONE not in alert.detail and "SYN-MRN-7" not in alert.detail and alert.acknowledged_at is None

    runner = CliRunner()
    listed = runner.invoke(hl7_app, ["dead", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"{message_id}\t" in listed.output and "SIU^S12\tC-DEAD" in listed.output and "text kept" in listed.output
    retried = runner.invoke(hl7_app, ["dead", "retry", str(message_id)])
    assert retried.exit_code == 0 and "queued again" in retried.output
    assert message(engine, message_id).state == "pending"
    assert alerts(engine)[0].acknowledged_at is not None
    with Session(engine) as session:
        [entry] = session.execute(select(AuditEvent).where(col(AuditEvent.entity_ref) == f"hl7_message/{message_id}",
                                                           col(AuditEvent.kind) == "admin")).scalars()
    assert entry.agent.startswith("cli:")
    # The mapping is fixed: the message is decided like any other.
    assert asyncio.run(Hl7Processor(engine, service.cipher, load_config({}), service.decider).run_once()) == 1
    assert message(engine, message_id).state == "done"
    with Session(engine) as session:
        assert session.execute(select(col(OutboxMessage.rule_id))
                               .where(col(OutboxMessage.rule_id) == "appointment-booked-confirmation")).first()
    again = runner.invoke(hl7_app, ["dead", "retry", str(message_id)])
    assert again.exit_code == 1 and "is done, not dead" in again.output
    assert runner.invoke(hl7_app, ["dead", "list"]).output.strip() == ""


def test_the_last_failed_attempt_makes_a_message_dead_with_an_alert(service: Service) -> None:
    engine = service.engine
    message_id = stored(service, "C-LAST")
    messages = table_of(Hl7Message)
    with transaction(engine) as session:  # every attempt but the last already failed
        session.execute(update(messages).where(messages.c.id == message_id).values(attempts=MAX_ATTEMPTS - 1))

    async def attempt() -> int:
        unreachable = FhirClient(f"http://127.0.0.1:{free_port()}/fhir", timeout_seconds=2)
        try:
            return await Hl7Processor(engine, service.cipher, load_config({}), service.decider, patient_source="fhir",
                                      fhir=unreachable).run_once()
        finally:
            await unreachable.aclose()
    assert asyncio.run(attempt()) == 1
    assert message(engine, message_id).state == "dead"
    [alert] = alerts(engine)
    assert f"HL7 message {message_id} could not be processed" in alert.detail


def test_a_message_whose_text_retention_removed_cannot_be_retried(service: Service) -> None:
    engine = service.engine
    message_id = stored(service, "C-GONE")
    messages = table_of(Hl7Message)
    with transaction(engine) as session:
        session.execute(update(messages).where(messages.c.id == message_id).values(state="dead", raw_enc=""))
    result = CliRunner().invoke(hl7_app, ["dead", "retry", str(message_id)])
    assert result.exit_code == 1 and "retention removed its text" in result.output
    assert "text purged" in CliRunner().invoke(hl7_app, ["dead", "list"]).output
    assert message(engine, message_id).state == "dead"
