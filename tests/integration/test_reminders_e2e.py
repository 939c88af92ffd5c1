"""Reminders and the satisfaction survey end to end over real HTTP: the real sekmet-fhir server, the
WhatsApp emulator and the service, with reminders and the survey turned on
(:func:`adapter.scheduling.decide.attach`).

Changes are made in the EHR as a front desk would (PUT the Appointment); the service learns of them
through its subscription and keeps the reminder rows in its outbox equal to the appointment."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.outbox.tables import OutboxMessage
from adapter.scheduling.decide import attach
from adapter.scheduling.survey import canonical
from adapter.storage.db import make_engine
from tests.integration.test_conversation_e2e import buttons, tap
from tests.support.e2e import create, ehr_client, health, patient, read, sent_to
from tests.support.synthetic import SYNTHETIC_TAG

pytestmark = pytest.mark.fhir
_numbers = itertools.count(70)
REMINDER_RULE = "appointment-booked-confirmation-reminder"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("reminders"), dispatch_backoff_seconds=0.2,
                        whatsapp_pair_interval_seconds=1.0, site_timezone="UTC", quiet_hours="21:00-08:00")
    attach(stack.service.decider, stack.settings)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def start_in(days: int, hour: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


def book(stack: DemoStack, start: datetime) -> tuple[int, str, str]:
    """A patient and a booked appointment; returns (phone suffix, patient, appointment) once the
    confirmation reached the emulator."""
    number = next(_numbers)
    patient_ref = patient(stack, number)
    appointment = create(stack, {
        "resourceType": "Appointment", "meta": {"tag": [SYNTHETIC_TAG]}, "status": "booked",
        "description": "Synthetic test appointment", "start": start.isoformat(timespec="seconds"),
        "end": (start + timedelta(minutes=30)).isoformat(timespec="seconds"),
        "participant": [{"actor": {"reference": patient_ref}, "required": "required", "status": "needs-action"},
                        {"actor": {"reference": "Location/synthetic-clinic"}, "required": "required",
                         "status": "accepted"}]})
    wait_for(lambda: sent_to(stack, number), 20, "the confirmation")
    return number, patient_ref, f"Appointment/{appointment['id']}"


def change(stack: DemoStack, reference: str, **changes: Any) -> None:
    current = read(stack, reference)
    with ehr_client(stack) as client:
        client.put(f"/{reference}", json={**current, **changes}).raise_for_status()


def reminder_rows(stack: DemoStack, appointment_ref: str) -> list[OutboxMessage]:
    with Session(make_engine(stack.settings.database_url)) as session:
        return list(session.exec(select(OutboxMessage).where(
            col(OutboxMessage.rule_id) == REMINDER_RULE, col(OutboxMessage.resource_ref) == appointment_ref)
            .order_by(col(OutboxMessage.due_at))))


def queued(stack: DemoStack, appointment_ref: str) -> list[OutboxMessage]:
    return [row for row in reminder_rows(stack, appointment_ref) if row.state == "queued"]


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_a_booking_plans_reminders_and_a_cancellation_in_the_ehr_removes_them(stack: DemoStack) -> None:
    start = start_in(4, 14)
    _, _, appointment = book(stack, start)
    rows = wait_for(lambda: len(queued(stack, appointment)) == 2 and queued(stack, appointment), 20, "reminders")
    assert [aware(row.due_at) for row in rows] == [start - timedelta(days=2), start - timedelta(hours=2)]
    change(stack, appointment, status="cancelled")
    wait_for(lambda: not queued(stack, appointment), 20, "the reminders cancelled")
    assert {row.dead_reason for row in reminder_rows(stack, appointment)} == {
        "reminder cancelled: appointment cancelled"}


def test_a_reschedule_in_the_ehr_moves_pending_reminders(stack: DemoStack) -> None:
    start, later = start_in(4, 10), start_in(6, 23)  # 23:00 is quiet: both reminders go at 21:00
    _, _, appointment = book(stack, start)
    wait_for(lambda: len(queued(stack, appointment)) == 2, 20, "reminders")
    change(stack, appointment, start=later.isoformat(timespec="seconds"),
           end=(later + timedelta(minutes=30)).isoformat(timespec="seconds"))
    moved = wait_for(lambda: [row for row in queued(stack, appointment) if aware(row.due_at) > start] or None, 20,
                     "the reminders moved")
    assert sorted(aware(row.due_at) for row in queued(stack, appointment)) == [
        (later - timedelta(days=2)).replace(hour=21), later.replace(hour=21)]
    assert moved and len(queued(stack, appointment)) == 2


def test_a_confirm_tap_stops_the_reminders(stack: DemoStack) -> None:
    number, _, appointment = book(stack, start_in(4, 12))
    wait_for(lambda: len(queued(stack, appointment)) == 2, 20, "reminders")
    confirm = buttons(sent_to(stack, number)[0])[0]
    tap(stack, number, confirm)
    wait_for(lambda: not queued(stack, appointment), 20, "the reminders cancelled by the tap")
    assert {row.dead_reason for row in reminder_rows(stack, appointment)} == {
        "reminder cancelled: patient confirmed"}


def test_a_fulfilled_appointment_asks_once_and_a_4_becomes_a_questionnaire_response(stack: DemoStack) -> None:
    number, patient_ref, appointment = book(stack, start_in(3, 9))
    change(stack, appointment, status="fulfilled")

    def survey_templates() -> list[dict[str, Any]]:
        return [m for m in sent_to(stack, number)
                if m["type"] == "template" and m["template"]["name"] == "satisfaction_survey"]

    invitation = wait_for(survey_templates, 20, "the survey invitation")[0]  # the window is closed: a template
    change(stack, appointment, description="Synthetic test appointment (notes)")  # a later version: no second ask
    tap(stack, number, buttons(invitation)[0])
    survey_list = wait_for(lambda: [m for m in sent_to(stack, number) if m["type"] == "interactive"], 20,
                           "the 1-5 list")[0]
    rows = buttons(survey_list)
    assert len(rows) == 5
    tap(stack, number, rows[3], kind="list_reply")

    def responses() -> list[dict[str, Any]]:
        with ehr_client(stack) as client:
            bundle = client.get("/QuestionnaireResponse", params={"_count": "100"}).json()
        return [entry["resource"] for entry in bundle.get("entry", [])
                if entry["resource"]["resourceType"] == "QuestionnaireResponse"
                and entry["resource"]["subject"]["reference"] == patient_ref]

    stored = wait_for(responses, 20, "the QuestionnaireResponse")
    assert len(stored) == 1
    response = stored[0]
    assert response["status"] == "completed" and response["questionnaire"] == canonical()
    assert response["subject"]["reference"] == patient_ref
    assert response["item"][0]["answer"][0]["valueCoding"]["code"] == "4"
    tap(stack, number, rows[4], kind="list_reply")  # a second answer: the survey is once per appointment
    wait_for(lambda: len([m for m in sent_to(stack, number) if m["type"] == "text"]) >= 2, 20, "the replies")
    assert len(responses()) == 1 and len(survey_templates()) == 1
    with Session(make_engine(stack.settings.database_url)) as session:  # audited as a patient-create
        created = session.exec(select(AuditEvent).where(
            col(AuditEvent.kind) == "patient-create",
            col(AuditEvent.entity_ref) == f"QuestionnaireResponse/{response['id']}/_history/1")).all()
    assert len(created) == 1 and created[0].patient_ref == patient_ref
    assert httpx.get(f"{stack.settings.public_base_url}/health", timeout=5).status_code == 200
