"""The HL7 v2 message store on both databases: a message committed with its receipt audit before
``STORED``, its raw text encrypted, deduplicated on (sending facility, MSH-10), and kept in the
original order per appointment (a message sent earlier but arriving later is ``stale``)."""

from __future__ import annotations

import os

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.tables import AuditEvent
from adapter.feeds.hl7_resources import appointment_id
from adapter.feeds.hl7_store import Hl7MessageStore, raw_context
from adapter.feeds.hl7_tables import Hl7Appointment, Hl7Message
from adapter.security.crypto import FieldCipher
from ehr.hl7.config import load_config
from ehr.hl7.messages import parse_message
from ehr.hl7.ports import StoreResult
from tests.ehr.hl7.conftest import PHONE, oru, siu

CIPHER = FieldCipher(os.urandom(32))
CONFIG = load_config({})


def store(engine: Engine, raw: str) -> StoreResult:
    return Hl7MessageStore(engine, CIPHER).store_now(parse_message(raw, CONFIG))


def rows(engine: Engine) -> list[Hl7Message]:
    with Session(engine) as session:
        return list(session.execute(select(Hl7Message).order_by(Hl7Message.id)).scalars())


def receipts(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.execute(select(AuditEvent).where(AuditEvent.agent == "ehr")).scalars())


def test_a_message_is_stored_once_encrypted_with_its_receipt(engine: Engine) -> None:
    raw = siu("S12", control_id="C-1")
    assert store(engine, raw) is StoreResult.STORED
    assert store(engine, raw) is StoreResult.DUPLICATE  # the same MSH-10 from the same facility
    assert store(engine, siu("S12", control_id="C-1", facility="OTHERFAC")) is StoreResult.STORED
    first, other = rows(engine)
    assert PHONE not in first.raw_enc and "SYN-MRN-7" not in first.raw_enc and "SYNTHETIC" not in first.raw_enc
    assert CIPHER.decrypt(first.raw_enc, context=raw_context("SYNFAC", "C-1")) == parse_message(raw, CONFIG).raw
    assert (first.state, other.state) == ("pending", "pending")
    [receipt, _] = receipts(engine)
    assert receipt.kind == "patient-read" and receipt.patient_ref == "Patient/SYN-MRN-7"
    assert receipt.entity_ref == f"Appointment/{appointment_id('SYNFAC', 'APT-1')}/_history/{first.id}"


def test_a_report_message_has_one_receipt_per_report(engine: Engine) -> None:
    assert store(engine, oru("F")) is StoreResult.STORED
    [receipt] = receipts(engine)
    assert receipt.entity_ref is not None and receipt.entity_ref.startswith("DiagnosticReport/hl7-")


def test_the_original_order_per_appointment_is_kept(engine: Engine) -> None:
    cancelled = siu("S15", control_id="C-2", sent="20261201100000")
    booked_earlier = siu("S12", control_id="C-1", sent="20261201090000")  # a resend overtaken by the S15
    moved_later = siu("S13", control_id="C-3", sent="20261201110000", start="20261216103000")
    same_instant = siu("S12", control_id="C-4", sent="20261201110000")  # a booking ranks before a reschedule
    for raw in (cancelled, booked_earlier, moved_later, same_instant):
        assert store(engine, raw) is StoreResult.STORED
    assert [(row.control_id, row.state) for row in rows(engine)] == [
        ("C-2", "pending"), ("C-1", "stale"), ("C-3", "pending"), ("C-4", "stale")]
    with Session(engine) as session:
        [latest] = session.execute(select(Hl7Appointment)).scalars()
        assert (latest.trigger, latest.resource_id) == ("S13", appointment_id("SYNFAC", "APT-1"))
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == 4  # stale too


def test_concurrent_messages_about_one_appointment_are_all_stored(engine: Engine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    messages = [siu("S12" if n == 0 else "S14", control_id=f"C-{n}", sent=f"2026120109{n:02d}00") for n in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:  # six connections, as six engine threads would send
        results = list(pool.map(lambda raw: store(engine, raw), messages))
    assert results == [StoreResult.STORED] * 12
    with Session(engine) as session:
        [latest] = session.execute(select(Hl7Appointment)).scalars()
    by_id = {row.id: row for row in rows(engine)}
    assert by_id[latest.message_id].control_id == "C-11"  # the last sent, whatever the arrival order
    # What arrived after it is stale; what is applied came in sending order.
    applied = [row for row in by_id.values() if row.state == "pending"]
    assert [row.message_time for row in applied] == sorted(row.message_time for row in applied)
