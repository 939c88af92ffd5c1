"""Taps on HL7-fed appointments when neither the FHIR API nor an SRM destination is configured: an
operator alert (the staff work item) and the hand-off answer, never dropped; an appointment the feed
has since ended is answered without any work item. Both databases."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.feeds.hl7_resources import appointment_id
from adapter.hl7.writeback import Hl7AppointmentWriter
from adapter.ops.tables import OperatorAlert
from adapter.service import make_fhir_client
from adapter.settings import load_settings
from ehr.writeback import WriteOutcome
from tests.ehr.hl7.conftest import siu
from tests.storage.test_hl7_store import store

APPOINTMENT = f"Appointment/{appointment_id('SYNFAC', 'APT-1')}"
PATIENT = "Patient/SYN-MRN-7"


def tap(engine: Engine, kind: str) -> WriteOutcome:
    settings = load_settings(mode="demo", hl7_enabled=True, fhir_base_url="http://127.0.0.1:9/fhir")

    async def run() -> WriteOutcome:
        fhir = make_fhir_client(settings)  # never called: no FHIR path is configured
        writer = Hl7AppointmentWriter(fhir, engine=engine, settings=settings)
        try:
            if kind == "confirm":
                return await writer.confirm(APPOINTMENT, PATIENT, "1")
            return await writer.cancel(APPOINTMENT, PATIENT, "1")
        finally:
            await fhir.aclose()
    return asyncio.run(run())


def alerts(engine: Engine) -> list[OperatorAlert]:
    with Session(engine) as session:
        return list(session.execute(select(OperatorAlert).where(OperatorAlert.kind == "hl7_writeback")).scalars())


def test_without_a_path_a_tap_becomes_an_operator_alert(engine: Engine) -> None:
    store(engine, siu("S12", control_id="C-1"))
    outcome = tap(engine, "confirm")
    assert outcome.kind == "handoff"
    [alert] = alerts(engine)
    assert "APT-1" in alert.detail and "SYNFAC" in alert.detail and "confirm" in alert.detail
    assert "+1" not in alert.detail and "SYNTHETIC" not in alert.detail  # a reference, never the phone or name
    assert tap(engine, "confirm").kind == "handoff" and len(alerts(engine)) == 1  # one open item per request


def test_an_appointment_the_feed_ended_needs_no_work_item(engine: Engine) -> None:
    store(engine, siu("S12", control_id="C-1"))
    store(engine, siu("S15", control_id="C-2", sent="20261201100000"))
    assert tap(engine, "confirm").kind == "not_allowed"
    assert tap(engine, "cancel").kind == "already"
    assert alerts(engine) == []
