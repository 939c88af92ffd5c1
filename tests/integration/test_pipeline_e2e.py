"""End to end over real HTTP: the real sekmet-fhir server notifies the real service, which sends
through the emulator. One stack per module; each test makes its own synthetic patients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import Session, col, select

from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.feeds.tables import InboxEvent
from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import make_engine, transaction
from ehr.hook_secrets import authorization_header, derive_secret
from portal_links.tokens import LinkSigner
from tests.support.e2e import create, ehr_client, health, patient, sent_to
from tests.support.synthetic import (
    REPORT_CONCLUSION,
    synthetic_appointment,
    synthetic_diagnostic_report,
    synthetic_patient,
)

pytestmark = pytest.mark.fhir


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("e2e"), dispatch_backoff_seconds=0.2)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def _notify(stack: DemoStack, key: str, path: str = "", body: bytes = b"", method: str = "POST",
            secret: str | None = None) -> httpx.Response:
    token = secret or derive_secret(stack.settings.ehr_hook_secret.get_secret_value().encode(), key)
    headers = {"Authorization": authorization_header(token), "Content-Type": "application/fhir+json"}
    return httpx.request(method, f"{stack.settings.public_base_url}/ehr/notify/{key}{path}", content=body,
                         headers=headers, timeout=10)


CONFIRMATION = "appointment-booked-confirmation"  # a booking also plans reminders (tests/storage/test_reminders.py)


def _skips(stack: DemoStack, resource_ref: str) -> list[str]:
    with Session(make_engine(stack.settings.database_url)) as session:
        rows = session.exec(select(NotificationSkip).where(col(NotificationSkip.resource_ref) == resource_ref))
        return [row.reason for row in rows if row.rule_id == CONFIRMATION]  # its reminders are skipped too


def _inbox_count(stack: DemoStack) -> int:
    with Session(make_engine(stack.settings.database_url)) as session:
        return len(session.exec(select(InboxEvent.id)).all())


def test_booked_appointment_sends_exactly_one_phi_free_confirmation(stack: DemoStack) -> None:
    patient_ref = patient(stack, 11)
    appointment = create(stack, synthetic_appointment(patient_ref))
    [message] = wait_for(lambda: sent_to(stack, 11), 20, "the confirmation")
    template = message["template"]
    assert template["name"] == "appointment_confirmation" and template["language"]["code"] == "en_US"
    body = next(c for c in template["components"] if c["type"] == "body")
    assert len(body["parameters"]) == 3
    payloads = [c["parameters"][0]["payload"] for c in template["components"] if c["type"] == "button"]
    assert len(payloads) == 4 and len(set(payloads)) == 4
    text = json.dumps(template)
    for secret in (appointment["id"], patient_ref.split("/")[1], "Synthetic", "Testpatient", "MRN"):
        assert secret not in text
    time.sleep(1.0)  # any second message would have arrived by now
    assert len(sent_to(stack, 11)) == 1


def test_spanish_patient_gets_the_spanish_template(stack: DemoStack) -> None:
    patient_ref = patient(stack, 12, language="es-MX")
    create(stack, synthetic_appointment(patient_ref))
    [message] = wait_for(lambda: sent_to(stack, 12), 20, "the confirmation")
    assert message["template"]["language"]["code"] == "es"


def test_duplicate_notification_and_ping_send_nothing_more(stack: DemoStack) -> None:
    patient_ref = patient(stack, 13)
    appointment = create(stack, synthetic_appointment(patient_ref))
    wait_for(lambda: sent_to(stack, 13), 20, "the confirmation")
    again = _notify(stack, "appointment", f"/Appointment/{appointment['id']}", json.dumps(appointment).encode(),
                    method="PUT")
    assert again.status_code == 200
    assert _notify(stack, "appointment").status_code == 200  # an empty-body ping
    assert _notify(stack, "appointment", f"/Appointment/{appointment['id']}", method="PUT").status_code == 200
    time.sleep(1.5)
    assert len(sent_to(stack, 13)) == 1


@contextmanager
def _ehr_notifications_paused(stack: DemoStack) -> Iterator[None]:
    """Turns the EHR's subscriptions off, as an EHR that dropped its notifications would be."""
    with ehr_client(stack) as client:
        subs = [e["resource"] for e in client.get("/Subscription", params={"status": "active"}).json().get("entry", [])]
        for sub in subs:
            client.put(f"/Subscription/{sub['id']}", json=dict(sub, status="off")).raise_for_status()
    try:
        yield
    finally:
        with ehr_client(stack) as client:
            for sub in subs:
                current = client.get(f"/Subscription/{sub['id']}").json()
                client.put(f"/Subscription/{sub['id']}", json=dict(current, status="requested"))


def test_ping_alone_finds_what_changed(stack: DemoStack) -> None:
    patient_ref = patient(stack, 14)
    with _ehr_notifications_paused(stack):
        create(stack, synthetic_appointment(patient_ref))
        time.sleep(0.5)
        assert sent_to(stack, 14) == []
        assert _notify(stack, "appointment").status_code == 200  # an empty-body ping, as without payload
        wait_for(lambda: sent_to(stack, 14), 20, "the confirmation found by the ping")


def test_preliminary_report_sends_nothing_and_final_sends_a_signed_link(stack: DemoStack) -> None:
    patient_ref = patient(stack, 15)
    report = create(stack, synthetic_diagnostic_report(patient_ref, status="preliminary"))
    time.sleep(1.5)
    assert sent_to(stack, 15) == []
    with ehr_client(stack) as client:
        client.put(f"/DiagnosticReport/{report['id']}", json=dict(report, status="final")).raise_for_status()
    [message] = wait_for(lambda: sent_to(stack, 15), 20, "results ready")
    template = message["template"]
    assert template["name"] == "results_ready" and REPORT_CONCLUSION not in json.dumps(template)
    url_button = next(c for c in template["components"] if c.get("sub_type") == "url")
    token = url_button["parameters"][0]["text"]
    assert report["id"] not in token and len(token) < 100
    LinkSigner(stack.settings.key_bytes("link_signing_key")).verify(token)
    link = f"{stack.settings.public_base_url}/l/{token}"
    preview = httpx.get(link, timeout=5)
    assert preview.status_code == 200 and preview.headers["cache-control"] == "no-store"
    opened = httpx.post(link, timeout=5)
    assert opened.status_code == 303 and opened.headers["location"].startswith(stack.settings.portal_base_url)
    with ehr_client(stack) as client:  # an amendment is not a second "results ready" under report_policy=once
        current = client.get(f"/DiagnosticReport/{report['id']}").json()
        client.put(f"/DiagnosticReport/{report['id']}", json=dict(current, status="amended")).raise_for_status()
    time.sleep(1.5)
    assert len(sent_to(stack, 15)) == 1


def test_no_consent_and_no_mobile_are_recorded_skips(stack: DemoStack) -> None:
    no_consent = patient(stack, 16, consent=False)
    appointment = create(stack, synthetic_appointment(no_consent))
    ref = f"Appointment/{appointment['id']}"
    assert wait_for(lambda: _skips(stack, ref), 20, "the skip") == ["no_opt_in"]
    landline = synthetic_patient(number=17)
    landline["telecom"] = [{"system": "email", "value": "synthetic@example.org"}]
    landline_patient = create(stack, landline)
    with transaction(make_engine(stack.settings.database_url)) as session:
        set_consent(session, f"Patient/{landline_patient['id']}", OPTED_IN, "admin")
    appointment = create(stack, synthetic_appointment(f"Patient/{landline_patient['id']}"))
    reasons = wait_for(lambda: _skips(stack, f"Appointment/{appointment['id']}"), 20, "the skip")
    assert reasons[0].startswith("no_mobile")


def test_a_booking_entered_after_its_start_sends_nothing_and_says_why(stack: DemoStack) -> None:
    patient_ref = patient(stack, 21)
    back_entry = (datetime.now(UTC) - timedelta(days=83)).replace(minute=0, second=0, microsecond=0)
    appointment = create(stack, synthetic_appointment(patient_ref, start=back_entry))
    ref = f"Appointment/{appointment['id']}"
    assert wait_for(lambda: _skips(stack, ref), 20, "the skip") == ["appointment_started"]
    create(stack, synthetic_appointment(patient_ref))  # a booking to come, for the same patient, still goes
    wait_for(lambda: sent_to(stack, 21), 20, "the confirmation of the booking to come")
    assert len(sent_to(stack, 21)) == 1


@pytest.mark.parametrize(("path", "body", "secret", "status"), [
    ("", b"{not json", None, 400),
    ("", b"{}", "wrong-secret", 403),
    ("", json.dumps({"resourceType": "Observation", "id": "x"}).encode(), None, 422),
    ("", b"x" * (9 * 1024 * 1024), None, 413),
])
def test_bad_notifications_get_a_clear_4xx_and_store_nothing(
        stack: DemoStack, path: str, body: bytes, secret: str | None, status: int) -> None:
    before = _inbox_count(stack)
    response = _notify(stack, "appointment", path, body, secret=secret)
    assert response.status_code == status
    assert _inbox_count(stack) == before


def test_whatsapp_outage_is_retried_until_sent(stack: DemoStack) -> None:
    faults = {"responses": [{"http_status": 500, "code": 131000}, {"http_status": 429, "code": 130429}]}
    httpx.post(f"{stack.emulator.base_url}/_emulator/faults", json=faults, timeout=5).raise_for_status()
    patient_ref = patient(stack, 18)
    appointment = create(stack, synthetic_appointment(patient_ref))
    wait_for(lambda: sent_to(stack, 18), 30, "the message after the outage")

    def recorded() -> OutboxMessage | None:  # the emulator has it a moment before our outbox records it
        with Session(make_engine(stack.settings.database_url)) as session:
            row = session.exec(select(OutboxMessage).where(
                col(OutboxMessage.resource_ref) == f"Appointment/{appointment['id']}",
                col(OutboxMessage.rule_id) == CONFIRMATION)).one()
        return row if row.state == "sent" else None

    row = wait_for(recorded, 10, "the outbox to record the send")
    assert row.attempts >= 2 and len(sent_to(stack, 18)) == 1


def test_lost_answer_is_reconciled_by_the_status_webhook_not_resent(stack: DemoStack) -> None:
    # Meta accepted the message but the answer never came back: the send is ambiguous. The status
    # webhook carrying our biz_opaque_callback_data settles it; a blind resend would double-send.
    faults = {"responses": [{"accept": True, "drop_connection": True}]}
    httpx.post(f"{stack.emulator.base_url}/_emulator/faults", json=faults, timeout=5).raise_for_status()
    patient_ref = patient(stack, 20)
    appointment = create(stack, synthetic_appointment(patient_ref))
    ref = f"Appointment/{appointment['id']}"

    def settled() -> OutboxMessage | None:
        with Session(make_engine(stack.settings.database_url)) as session:
            row = session.exec(select(OutboxMessage).where(col(OutboxMessage.resource_ref) == ref,
                                                           col(OutboxMessage.rule_id) == CONFIRMATION)).one_or_none()
        return row if row is not None and row.state == "sent" else None

    row = wait_for(settled, 20, "the ambiguous send to be reconciled")
    assert row.attempts == 1 and row.wamid is not None
    assert len(sent_to(stack, 20)) == 1


def test_ehr_outage_is_retried_and_nothing_is_lost(stack: DemoStack) -> None:
    patient_ref = patient(stack, 19)
    with _ehr_notifications_paused(stack):
        proposed = create(stack, synthetic_appointment(patient_ref, status="proposed"))
        with ehr_client(stack) as client:
            booked = client.put(f"/Appointment/{proposed['id']}", json=dict(proposed, status="booked")).json()
        stack.ehr.stop()
        try:
            response = _notify(stack, "appointment", f"/Appointment/{booked['id']}", json.dumps(booked).encode(),
                               method="PUT")
            assert response.status_code == 200  # stored although the EHR cannot be read now
            time.sleep(1.0)
            with Session(make_engine(stack.settings.database_url)) as session:
                event = session.exec(select(InboxEvent).where(col(InboxEvent.resource_id) == booked["id"])).one()
            assert event.state == "pending" and event.last_error == "FhirUnavailableError"
            assert sent_to(stack, 19) == []
        finally:
            stack.ehr.start()
        wait_for(lambda: sent_to(stack, 19), 30, "the confirmation after the EHR came back")
