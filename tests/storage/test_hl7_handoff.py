""""Talk to staff" about an HL7-fed appointment whose patient is known only by MRN, with no FHIR server
reachable: the action runner with the service's real HL7 writer turns it into an operator alert (the
staff work item) at the first attempt, never a failure; the hand-off stays open until an operator
acknowledges the alert. Both databases."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.tables import ActionRequest, Conversation
from adapter.feeds.hl7_resources import appointment_id
from adapter.hl7.writeback import Hl7AppointmentWriter
from adapter.ops.alerts import acknowledge
from adapter.ops.tables import OperatorAlert
from adapter.service import make_fhir_client
from adapter.settings import load_settings
from adapter.storage.db import transaction, utcnow
from tests.ehr.hl7.conftest import siu
from tests.storage.test_actions import NUMBER, runner
from tests.storage.test_hl7_store import store
from tests.support.stores import outbox_store

APPOINTMENT = f"Appointment/{appointment_id('SYNFAC', 'APT-1')}"


def ask(engine: Engine, kind: str) -> int:
    index = outbox_store(engine).contacts.index.phone(NUMBER)
    with transaction(engine) as session:
        row = ActionRequest(dedupe_key=f"{kind}:{utcnow().timestamp()}", kind=kind, patient_ref="Patient/1",
                            resource_ref=APPOINTMENT, version_id="1", phone_index=index, language="en_US",
                            urgent=True, next_attempt_at=utcnow(), created_at=utcnow())
        session.add(row)
        session.flush()
        return row.id or 0


def outcome(engine: Engine, request_id: int) -> tuple[str, str | None, int]:
    with Session(engine) as session:
        row = session.get(ActionRequest, request_id)
        assert row is not None
        return row.state, row.outcome, row.attempts


async def test_talk_to_staff_without_a_fhir_server_becomes_an_operator_work_item(engine: Engine) -> None:
    store(engine, siu("S12", control_id="C-1"))
    settings = load_settings(mode="demo", hl7_enabled=True, fhir_base_url="http://127.0.0.1:9/fhir")
    fhir = make_fhir_client(settings)  # nothing listens there
    actions = runner(engine, Hl7AppointmentWriter(fhir, engine=engine, settings=settings))  # type: ignore[arg-type]
    try:
        asked = ask(engine, "handoff")
        assert await actions.run_once() == 1
        with Session(engine) as session:
            [alert] = session.exec(select(OperatorAlert).where(col(OperatorAlert.kind) == "hl7_handoff")).all()
            conversation = session.exec(select(Conversation)).one()
        assert outcome(engine, asked) == ("done", f"handoff OperatorAlert/{alert.id}", 1)  # at once, no retry
        assert alert.detail.startswith("URGENT: ") and "APT-1 of SYNFAC" in alert.detail
        assert NUMBER[2:] not in alert.detail and "SYNTHETIC" not in alert.detail
        assert conversation.handoff_task == f"OperatorAlert/{alert.id}"
        # The patient writes again while staff have not acted: the hand-off is still open.
        still = ask(engine, "handoff_check")
        assert await actions.run_once() == 1 and outcome(engine, still)[:2] == ("done", "handoff_open")
        acknowledge(engine, alert.id)  # staff called the patient back
        over = ask(engine, "handoff_check")
        assert await actions.run_once() == 1 and outcome(engine, over)[:2] == ("done", "handoff_over")
    finally:
        await actions.aclose()
        await fhir.aclose()
