"""``hl7_patient_source=fhir``: an HL7 patient is the FHIR Patient found by the PID-3 identifier
(sekmet-fhir, searched by ``identifier=system|value``); its telecom and consent under its FHIR
reference decide, not PID-13. The search is audited as a BALP PatientQuery. With
``hl7_writeback_via_fhir`` a tap on the HL7-fed appointment is written to the FHIR Appointment that
carries its filler identifier."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from adapter.audit.tables import AuditEvent
from adapter.demo.sandbox_ehr import free_port
from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import make_engine, transaction
from tests.integration.test_conversation_e2e import buttons, tap
from tests.integration.test_hl7_feed import send, siu, start_in
from tests.support.e2e import create, read, sent_to
from tests.support.synthetic import SYNTHETIC_TAG, synthetic_patient

pytestmark = pytest.mark.fhir


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("hl7-fhir"), consent_source="registry", hl7_enabled=True,
                        hl7_listen_port=free_port(), hl7_patient_source="fhir", hl7_writeback_via_fhir=True,
                        dispatch_backoff_seconds=0.2, whatsapp_pair_interval_seconds=1.0)
    yield stack
    stack.stop()


def test_the_patient_is_read_from_fhir_by_identifier(stack: DemoStack) -> None:
    with_mrn = {**synthetic_patient(number=62), "identifier": [{"system": "urn:oid:1.2.3.4", "value": "SYN-FHIR-62"}]}
    found = f"Patient/{create(stack, with_mrn)['id']}"
    with transaction(make_engine(stack.settings.database_url)) as session:
        set_consent(session, found, OPTED_IN, "admin")
    # PID-13 is empty: the number can only come from the FHIR Patient.
    [ack] = send(stack, siu("S12", 62, "APT-FHIR", start_in(5), mrn="SYN-FHIR-62", phone=False))
    assert ack.code == "AA"
    wait_for(lambda: sent_to(stack, 62), 20, "the confirmation")
    with Session(make_engine(stack.settings.database_url)) as session:
        queries = list(session.execute(select(AuditEvent).where(AuditEvent.kind == "patient-query",
                                                                AuditEvent.patient_ref == found)).scalars())
    assert queries and queries[0].entity_ref == "Patient" and "SYN-FHIR" not in (queries[0].detail or "")
    assert len(sent_to(stack, 62)) == 1


def test_a_tap_is_written_to_the_fhir_appointment_found_by_filler_id(stack: DemoStack) -> None:
    with_mrn = {**synthetic_patient(number=63), "identifier": [{"system": "urn:oid:1.2.3.4", "value": "SYN-FHIR-63"}]}
    found = f"Patient/{create(stack, with_mrn)['id']}"
    with transaction(make_engine(stack.settings.database_url)) as session:
        set_consent(session, found, OPTED_IN, "admin")
    start = start_in(6)
    appointment = create(stack, {
        "resourceType": "Appointment", "meta": {"tag": [SYNTHETIC_TAG]}, "status": "booked",
        "identifier": [{"system": "urn:hl7v2:SYNFAC:filler-appointment", "value": "APT-FHIR-WB"}],
        "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
        "participant": [{"actor": {"reference": found}, "status": "needs-action"}]})
    [ack] = send(stack, siu("S12", 63, "APT-FHIR-WB", start, mrn="SYN-FHIR-63", phone=False))
    assert ack.code == "AA"
    confirm, *_ = buttons(wait_for(lambda: sent_to(stack, 63), 20, "the confirmation")[0])
    tap(stack, 63, confirm)
    wait_for(lambda: read(stack, f"Appointment/{appointment['id']}")["participant"][0]["status"] == "accepted", 20,
             "the FHIR Appointment confirmed")
