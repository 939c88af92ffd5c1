"""The operator pages in real headless Chromium against the running demo stack (sandbox EHR, WhatsApp
emulator, service): an operator retries a real dead letter (Meta refused the template, through the
emulator's injected error) and the message goes; an operator resumes sending that a real account-level
error paused, after the confirmation step, and the held message goes; an operator cannot use an admin-only
action; an admin replays a resource and syncs templates; every page works at phone width (375 px).

Writes docs/screenshots/operator-*.png.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.demo.stack import subscriptions_ready, wait_for
from adapter.ops.alerts import open_alerts
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.security.roles import Role
from adapter.storage.db import transaction
from tests.browser.conftest import screenshot
from tests.browser.console_stack import ConsoleStack, console_stack, login

PAGES = ("/console/operator", "/console/operator/alerts", "/console/operator/dead-letters",
         "/console/operator/skips", "/console/operator/templates", "/console/operator/feeds",
         "/console/operator/handoffs", "/console/operator/consent")
CONFIRMATION = "appointment-booked-confirmation"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("operator")) as running:
        wait_for(lambda: subscriptions_ready(running.demo), 30, "the EHR subscriptions")
        yield running


def book(stack: ConsoleStack, phone: str, *, consent: bool = True) -> str:
    """A synthetic patient with ``phone`` and a booked appointment five days ahead; its reference."""
    start = (datetime.now(stack.demo.settings.zone) + timedelta(days=5)).replace(hour=10, minute=30, second=0,
                                                                                 microsecond=0)
    with httpx.Client(base_url=stack.demo.ehr.base_url, timeout=10,
                      headers={"Content-Type": "application/fhir+json"}) as ehr:
        patient = ehr.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Synthetic-Operator"}],
                                             "telecom": [{"system": "phone", "value": phone, "use": "mobile"}]})
        patient_ref = f"Patient/{patient.raise_for_status().json()['id']}"
        if consent:
            with transaction(stack.engine) as session:
                set_consent(session, patient_ref, OPTED_IN, "admin")
        appointment = ehr.post("/Appointment", json={
            "resourceType": "Appointment", "status": "booked", "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "participant": [{"actor": {"reference": patient_ref}, "status": "needs-action"}]})
        return f"Appointment/{appointment.raise_for_status().json()['id']}"


def confirmation(stack: ConsoleStack, reference: str) -> OutboxMessage | None:
    with Session(stack.engine) as session:
        return session.exec(select(OutboxMessage).where(col(OutboxMessage.resource_ref) == reference,
                                                        col(OutboxMessage.rule_id) == CONFIRMATION)).first()


def inject(stack: ConsoleStack, code: int) -> None:
    """The emulator answers the next send with Meta's error ``code`` (HTTP 400)."""
    httpx.post(f"{stack.demo.emulator.base_url}/_emulator/faults", timeout=5,
               json={"responses": [{"http_status": 400, "code": code}]}).raise_for_status()


def delivered_to(stack: ConsoleStack, digits: str) -> list[dict[str, Any]]:
    """The request bodies the emulator accepted for ``digits``, oldest first."""
    found = httpx.get(f"{stack.demo.emulator.base_url}/_emulator/messages", params={"to": digits}, timeout=5)
    return [m.get("payload", m) for m in found.raise_for_status().json()["messages"]]


def audited(stack: ConsoleStack, op: str, role: Role) -> list[AuditEvent]:
    """The console's audit entries for ``op`` by ``role``'s key (kind admin, as the admin API's)."""
    with Session(stack.engine) as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "admin",
                                                     col(AuditEvent.agent) == f"user:console-{role.value}"))
        return [row for row in rows if json.loads(row.detail or "{}").get("op") == op]


def confirm(page: Any) -> None:
    """The confirmation step: tick "I confirm" and send the form again."""
    page.get_by_label("I confirm").check()
    page.locator("form.stack button[type=submit]").click()


def test_operator_retries_a_dead_letter_and_acks_its_alert(stack: ConsoleStack, page: Any) -> None:
    inject(stack, 132001)  # "template does not exist": a configuration error, dead-lettered with an alert
    reference = book(stack, "+1 201-555-0181")
    dead = wait_for(lambda: (row := confirmation(stack, reference)) is not None and row.state == "dead" and row,
                    30, "the confirmation to be dead-lettered")
    assert not delivered_to(stack, "12015550181")

    login(page, stack, Role.OPERATOR)
    page.goto(stack.url("/console/operator/dead-letters"))
    row = page.locator(f"#dead-{dead.id}")
    assert "132001" in row.inner_text() and reference in row.inner_text()
    screenshot(page, "operator-dead-letters")
    row.get_by_role("button", name=f"Retry message {dead.id}").click()
    assert f"Queue message {dead.id} again" in page.locator("#confirm-what").inner_text()
    assert confirmation(stack, reference).state == "dead"  # posted, not confirmed
    screenshot(page, "operator-confirm")
    confirm(page)
    assert "queued again" in page.get_by_role("status").inner_text()
    wait_for(lambda: delivered_to(stack, "12015550181"), 30, "the retried message at the emulator")
    assert wait_for(lambda: (row := confirmation(stack, reference)) is not None and row.state == "sent", 10,
                    "the outbox row to be sent")
    page.goto(stack.url("/console/operator/dead-letters"))
    assert page.locator(f"#dead-{dead.id}").count() == 0
    [retried] = audited(stack, "dead-letter-retry", Role.OPERATOR)
    assert (retried.entity_ref, retried.agent_role, retried.outcome) == (f"outbox/{dead.id}", "operator", "0")

    alert = next(a for a in open_alerts(stack.engine) if a.kind == "configuration_error")
    page.goto(stack.url("/console/operator/alerts"))
    screenshot(page, "operator-alerts")
    page.get_by_role("button", name=f"Acknowledge alert {alert.id}").click()
    confirm(page)
    assert f"Alert {alert.id} acknowledged." in page.get_by_role("status").inner_text()
    assert all(a.id != alert.id for a in open_alerts(stack.engine))
    assert [e.entity_ref for e in audited(stack, "alert-ack", Role.OPERATOR)] == [f"alert/{alert.id}"]


def test_operator_resumes_sending_after_confirming(stack: ConsoleStack, page: Any) -> None:
    inject(stack, 131042)  # "business payment issue": account-level, the circuit breaker pauses all sending
    reference = book(stack, "+1 201-555-0182")
    wait_for(lambda: sending_paused(stack.engine), 30, "sending to pause")
    held = wait_for(lambda: (row := confirmation(stack, reference)) is not None and row.attempts and row, 10,
                    "the refused confirmation")
    assert held.state == "queued" and not delivered_to(stack, "12015550182")

    login(page, stack, Role.OPERATOR)
    page.goto(stack.url("/console/operator"))
    assert "Paused since" in page.locator("#sending-state").inner_text()
    assert page.locator("#held").inner_text().startswith("1 message(s) held")
    assert page.locator("#reason").count() == 0  # pausing is the admin's
    screenshot(page, "operator-overview-paused")
    page.get_by_role("link", name="Resume sending…").click()
    screenshot(page, "operator-resume-confirm")
    assert sending_paused(stack.engine) is not None  # the confirmation page changed nothing
    confirm(page)
    assert "Sending resumed" in page.get_by_role("status").inner_text()
    assert page.locator("#sending-state").inner_text() == "Sending is on."
    assert sending_paused(stack.engine) is None
    wait_for(lambda: delivered_to(stack, "12015550182"), 30, "the held message at the emulator")
    assert len(audited(stack, "resume", Role.OPERATOR)) == 1
    screenshot(page, "operator-overview")


def test_operator_cannot_use_admin_actions(stack: ConsoleStack, page: Any) -> None:
    login(page, stack, Role.OPERATOR)
    refused = page.goto(stack.url("/console/operator/replay"))
    assert refused is not None and refused.status == 403
    page.goto(stack.url("/console/operator/templates"))
    assert page.get_by_role("button", name="Sync templates…").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, form in (("/console/operator/sending/pause", {"reason": "test", "confirm": "yes"}),
                       ("/console/operator/templates/sync", {"confirm": "yes"})):
        answer = page.request.post(stack.url(path), form={"csrf_token": token, **form})
        assert answer.status == 403, path
    assert sending_paused(stack.engine) is None
    assert not audited(stack, "pause", Role.OPERATOR) and not audited(stack, "templates-sync", Role.OPERATOR)


def replay_in_console(page: Any, reference: str) -> str:
    page.goto(page.url.split("/console/")[0] + "/console/operator/replay")
    page.get_by_label("Resource reference").fill(reference)
    page.get_by_role("button", name="Replay…").click()
    confirm(page)
    return str(page.locator("#replay-result").inner_text())


def test_admin_replays_a_resource_and_syncs_templates(stack: ConsoleStack, page: Any) -> None:
    sent = book(stack, "+1 201-555-0183")
    wait_for(lambda: delivered_to(stack, "12015550183"), 30, "the confirmation")
    unsent = book(stack, "+1 201-555-0186", consent=False)
    wait_for(lambda: _skipped(stack, unsent), 30, "the skip (no opt-in)")
    login(page, stack, Role.ADMIN)
    assert replay_in_console(page, sent).startswith(f"{sent}: 0 queued")  # the confirmation went already
    assert len(delivered_to(stack, "12015550183")) == 1
    with transaction(stack.engine) as session:  # the cause fixed: the patient opted in (`bridge consent grant`)
        set_consent(session, _patient_of(stack, unsent), OPTED_IN, "admin")
    assert not replay_in_console(page, unsent).startswith(f"{unsent}: 0 queued")
    screenshot(page, "operator-replay")
    wait_for(lambda: delivered_to(stack, "12015550186"), 30, "the replayed confirmation")
    assert [e.entity_ref for e in audited(stack, "replay", Role.ADMIN)] == [sent, unsent]

    page.goto(stack.url("/console/operator/templates"))
    page.get_by_role("button", name="Sync templates…").click()
    confirm(page)
    assert "Synced:" in page.locator("#sync-result").inner_text()
    assert "APPROVED" in page.locator("table").inner_text()
    screenshot(page, "operator-templates")

    page.goto(stack.url("/console/operator"))
    page.get_by_label("Reason to pause (admin)").fill("synthetic maintenance window")
    page.get_by_role("button", name="Pause sending…").click()
    confirm(page)
    assert "synthetic maintenance window" in page.locator("#sending-state").inner_text()
    paused = sending_paused(stack.engine)
    assert paused is not None and paused.reason == "paused by user:console-admin: synthetic maintenance window"
    page.get_by_role("link", name="Resume sending…").click()
    confirm(page)
    assert sending_paused(stack.engine) is None
    assert len(audited(stack, "pause", Role.ADMIN)) == len(audited(stack, "resume", Role.ADMIN)) == 1


def test_pages_work_at_phone_width(stack: ConsoleStack, page: Any) -> None:
    staffed = book(stack, "+1 201-555-0184")
    message = wait_for(lambda: delivered_to(stack, "12015550184"), 30, "the confirmation")[0]
    *_, staff = [c["parameters"][0]["payload"] for c in message["template"]["components"]
                 if c.get("sub_type") == "quick_reply"]
    httpx.post(f"{stack.demo.emulator.base_url}/_emulator/inbound", timeout=10, json={
        "from": "+1 201-555-0184", "button": {"payload": staff, "text": "Talk to staff"}}).raise_for_status()
    task = wait_for(lambda: _handoff_task(stack), 30, "the hand-off Task")
    reference = book(stack, "+1 201-555-0185", consent=False)  # a skip (no opt-in) to list
    wait_for(lambda: _skipped(stack, reference), 30, "the skip")
    login(page, stack, Role.OPERATOR)
    page.set_viewport_size({"width": 375, "height": 800})
    for path in PAGES:
        answer = page.goto(stack.url(path))
        assert answer is not None and answer.status == 200, path
        # Tables scroll inside their own box; the page itself never scrolls sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        name = path.rstrip("/").rsplit("/", 1)[-1]
        screenshot(page, f"operator-{'overview' if name == 'operator' else name}-phone")
    page.goto(stack.url("/console/operator/skips"))
    assert "no_opt_in" in page.locator("table").inner_text()
    page.goto(stack.url("/console/operator/handoffs"))
    assert task in page.locator("table").inner_text()

    page.goto(stack.url("/console/operator/consent"))
    patient = _patient_of(stack, staffed)  # opted in, one number on file, wrote just now (the tap)
    page.get_by_label("Patient reference").fill(patient)
    page.get_by_role("button", name="Look up").click()
    result = page.locator("#consent-result").inner_text()
    assert "opted_in" in result and page.locator("#consent-window").inner_text() == "open"
    assert page.locator("#consent-numbers").inner_text() == "1"
    content = page.content()
    assert not any(shown in content for shown in ("2015550184", "555-0184", "555 0184"))  # not even in part
    assert patient not in page.url  # the reference travelled in the POST body
    assert [e.patient_ref for e in audited(stack, "consent-lookup", Role.OPERATOR)] == [patient]
    screenshot(page, "operator-consent-phone")


def _skipped(stack: ConsoleStack, reference: str) -> bool:
    from adapter.outbox.tables import NotificationSkip

    with Session(stack.engine) as session:
        return session.exec(select(NotificationSkip)
                            .where(col(NotificationSkip.resource_ref) == reference)).first() is not None


def _handoff_task(stack: ConsoleStack) -> str | None:
    from adapter.conversation.tables import Conversation

    with Session(stack.engine) as session:
        return session.exec(select(Conversation.handoff_task)
                            .where(col(Conversation.handoff_task).is_not(None))).first()


def _patient_of(stack: ConsoleStack, reference: str) -> str:
    found = httpx.get(f"{stack.demo.ehr.base_url}/{reference}", timeout=5).raise_for_status().json()
    return str(found["participant"][0]["actor"]["reference"])

