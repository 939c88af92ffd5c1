"""Audit entries on the EHR and link side, through the real code paths, on SQLite and PostgreSQL:
the decide step's FHIR reads, write-backs of taps (real sekmet FHIR server), link requests over
loopback HTTP with security alerts for forged and expired tokens, refused EHR notifications, and
operator commands. Each entry commits or rolls back with the step it records."""

from __future__ import annotations

import getpass
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from adapter.audit.link_access import LINK_PORTS
from adapter.audit.tables import AuditEvent
from adapter.audit.trail import Kind
from adapter.cli.main import app as cli_app
from adapter.conversation.tables import ActionRequest
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import InboxEvent, ResourceState
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.service import Service, build_service, start, stop
from adapter.settings import load_settings
from adapter.storage.db import transaction, utcnow
from ehr.hook_secrets import authorization_header, derive_secret
from ehr.intake import build_intake_router
from ehr.notifications import IncomingNotification
from portal_links.routes import build_link_router
from portal_links.store import LinkStore
from portal_links.tokens import LinkSigner, token_hash
from tests.support.asgi_server import serve_in_thread
from tests.support.fhir_server import RunningFhirServer
from tests.support.synthetic import reference, synthetic_appointment, synthetic_patient

LINK_KEY = b"L" * 32
HOOK_MASTER = b"H" * 32
PORTAL = "https://portal.hospital.example"
PHONE_INDEX = b"\x01" * 32  # no contact on file: the runner's replies are skipped, the audit is not


def audit_rows(engine: Engine, kind: Kind | None = None) -> list[AuditEvent]:
    with Session(engine) as session:
        query = select(AuditEvent).order_by(col(AuditEvent.id))
        if kind is not None:
            query = query.where(col(AuditEvent.kind) == kind.value)
        return list(session.exec(query))


def detail(row: AuditEvent) -> dict[str, Any]:
    return dict(json.loads(row.detail or "{}"))


# --- the EHR side: a service wired to the real FHIR server ------------------------------------


@pytest.fixture
async def service(engine: Engine, fhir_server: RunningFhirServer) -> AsyncIterator[Service]:
    built = build_service(load_settings(mode="demo", fhir_base_url=fhir_server.base_url), engine=engine)
    await start(built)
    try:
        yield built
    finally:
        await stop(built)


async def booked(service: Service, number: int, *, status: str = "booked") -> tuple[str, dict[str, Any]]:
    assert service.fhir is not None
    patient = await service.fhir.create(synthetic_patient(number=number))
    patient_ref = reference(patient)
    appointment = await service.fhir.create(synthetic_appointment(patient_ref, status=status))  # type: ignore[arg-type]
    return patient_ref, appointment


async def test_a_decide_step_records_a_read_of_the_appointment_and_of_the_patient(service: Service) -> None:
    patient_ref, appointment = await booked(service, 31)
    with transaction(service.engine) as session:
        set_consent(session, patient_ref, OPTED_IN, "admin")
    assert service.fhir is not None and service.pipeline is not None
    current = await service.fhir.read("Appointment", appointment["id"])
    decision = await service.pipeline.handle_resource(current)
    assert len([key for key in decision.queued if not key.startswith("reminder:")]) == 1  # + its two reminders
    reads = audit_rows(service.engine, Kind.PATIENT_READ)
    patient_id = patient_ref.split("/")[1]
    assert [(r.entity_ref, r.patient_ref, r.action, r.outcome) for r in reads] == [
        (f"Appointment/{appointment['id']}/_history/1", patient_ref, "R", "0"),
        (f"Patient/{patient_id}/_history/1", patient_ref, "R", "0"),
    ]
    assert all(detail(r) == {"step": "decide"} and r.agent == "system" for r in reads)


class FailingConsent:
    """A consent source whose database read fails (the step fails after its EHR reads were made)."""

    def may_message(self, session: Session, patient_ref: str) -> bool:
        raise RuntimeError("consent registry unavailable")

    def may_message_many(self, session: Session, patient_refs: list[str]) -> dict[str, bool]:
        raise RuntimeError("consent registry unavailable")


async def test_a_decide_step_that_rolls_back_leaves_no_audit_entry(service: Service) -> None:
    _, appointment = await booked(service, 32)
    assert service.fhir is not None and service.pipeline is not None
    service.decider.consent = FailingConsent()
    current = await service.fhir.read("Appointment", appointment["id"])
    with pytest.raises(RuntimeError, match="consent registry"):
        await service.pipeline.handle_resource(current)
    assert audit_rows(service.engine) == []
    with Session(service.engine) as session:
        assert session.exec(select(ResourceState)).all() == []  # the step itself rolled back too


class ConsentFailingFor:
    """A consent source whose read fails whenever one patient is among those asked about."""

    def __init__(self, poisoned: str) -> None:
        self.poisoned = poisoned

    def may_message(self, session: Session, patient_ref: str) -> bool:
        return self.may_message_many(session, [patient_ref])[patient_ref]

    def may_message_many(self, session: Session, patient_refs: list[str]) -> dict[str, bool]:
        if self.poisoned in patient_refs:
            raise RuntimeError("consent registry unavailable")
        return dict.fromkeys(patient_refs, True)


async def test_a_version_that_fails_its_batch_does_not_hold_up_the_others(service: Service) -> None:
    booked_ones = [await booked(service, 40 + n) for n in range(3)]
    assert service.pipeline is not None
    service.decider.consent = ConsentFailingFor(booked_ones[1][0])
    service.inbox.accept([IncomingNotification(subscription_key="ehr", kind="resource", resource_type="Appointment",
                                               resource_id=appointment["id"]) for _, appointment in booked_ones])
    assert await service.pipeline.process_inbox_once() == 3  # one batch: it fails, then each is decided alone
    with Session(service.engine) as session:
        events = {row.resource_id: row for row in session.exec(select(InboxEvent))}
        states = {row.resource_id for row in session.exec(select(ResourceState))}
    good, bad = [booked_ones[0][1]["id"], booked_ones[2][1]["id"]], booked_ones[1][1]["id"]
    assert [events[key].state for key in good] == ["done", "done"] and states == set(good)
    assert events[bad].state == "pending" and events[bad].last_error == "RuntimeError"  # retried later
    assert {row.patient_ref for row in audit_rows(service.engine, Kind.PATIENT_READ)} == {
        booked_ones[0][0], booked_ones[2][0]}  # the failed step's reads rolled back with it


def action_request(engine: Engine, kind: str, patient_ref: str, appointment: dict[str, Any]) -> int:
    with transaction(engine) as session:
        row = ActionRequest(dedupe_key=f"{kind}:{appointment['id']}", kind=kind, patient_ref=patient_ref,
                            resource_ref=reference(appointment), version_id=appointment["meta"]["versionId"],
                            phone_index=PHONE_INDEX, language="en_US", next_attempt_at=utcnow(), created_at=utcnow())
        session.add(row)
        session.flush()
        return row.id or 0


async def run_actions(service: Service) -> None:
    assert service.actions is not None
    assert await service.actions.run_once() == 1


async def test_a_confirm_tap_records_an_update_with_the_appointment_s_new_version(service: Service) -> None:
    patient_ref, appointment = await booked(service, 33, status="proposed")
    action_request(service.engine, "confirm", patient_ref, appointment)
    await run_actions(service)
    assert service.fhir is not None
    now = await service.fhir.read("Appointment", appointment["id"])
    assert now["meta"]["versionId"] == "2"
    [update] = audit_rows(service.engine, Kind.PATIENT_UPDATE)
    assert (update.entity_ref, update.patient_ref, update.action, update.outcome, update.agent) == (
        f"Appointment/{appointment['id']}/_history/2", patient_ref, "U", "0", "patient")
    assert detail(update) == {"request": "confirm", "result": "confirmed", "via": "whatsapp", "performer": "system"}


async def test_a_stale_tap_records_a_failed_update_and_writes_nothing(service: Service) -> None:
    patient_ref, appointment = await booked(service, 34, status="proposed")
    assert service.fhir is not None
    moved = {**appointment, "start": "2031-01-06T09:00:00+00:00", "end": "2031-01-06T09:30:00+00:00"}
    await service.fhir.update(moved, if_match=appointment["meta"]["versionId"])  # the clinic moved it
    action_request(service.engine, "confirm", patient_ref, appointment)  # the tap is on version 1
    await run_actions(service)
    [update] = audit_rows(service.engine, Kind.PATIENT_UPDATE)
    assert (update.entity_ref, update.outcome) == (f"Appointment/{appointment['id']}/_history/2", "4")
    assert detail(update)["error"] == "StaleVersion"


async def test_a_handoff_records_the_creation_of_its_task(service: Service) -> None:
    patient_ref, appointment = await booked(service, 35)
    action_request(service.engine, "handoff", patient_ref, appointment)
    await run_actions(service)
    [created] = audit_rows(service.engine, Kind.PATIENT_CREATE)
    assert created.entity_ref is not None and created.entity_ref.startswith("Task/")
    assert (created.patient_ref, created.action, created.agent) == (patient_ref, "C", "patient")
    assert service.fhir is not None
    task = await service.fhir.read("Task", created.entity_ref.split("/")[1])
    assert task["for"]["reference"] == patient_ref


async def test_an_unreachable_ehr_records_each_failed_attempt_then_the_giving_up(engine: Engine) -> None:
    import socket

    from adapter.conversation.actions import MAX_ATTEMPTS

    with socket.socket() as probe:  # a port nobody listens on: every EHR call is refused at once
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/fhir"
    down = build_service(load_settings(mode="demo", fhir_base_url=closed), engine=engine)
    await start(down)
    try:
        appointment = {"resourceType": "Appointment", "id": "example-9", "meta": {"versionId": "3"}}
        request_id = action_request(engine, "cancel", "Patient/example-1", appointment)
        await run_actions(down)
        with transaction(engine) as session:  # the last attempt is due now
            row = session.get(ActionRequest, request_id)
            assert row is not None
            row.attempts, row.next_attempt_at = MAX_ATTEMPTS - 1, utcnow()
            session.add(row)
        await run_actions(down)
    finally:
        await stop(down)
    rows = audit_rows(engine, Kind.PATIENT_UPDATE)
    assert [(r.outcome, r.entity_ref, r.patient_ref, r.agent) for r in rows] == [
        ("4", "Appointment/example-9", "Patient/example-1", "patient"),
        ("8", "Appointment/example-9", "Patient/example-1", "patient")]
    assert [(detail(r)["attempt"], detail(r)["final"]) for r in rows] == [(1, False), (MAX_ATTEMPTS, True)]
    assert {detail(r)["error"] for r in rows} == {"FhirUnavailableError"}


# --- links: the real router over loopback HTTP ---------------------------------------------------


class LinkSite:
    def __init__(self, engine: Engine, url: str, store: LinkStore) -> None:
        self.engine, self.url, self.store = engine, url, store

    def mint(self, **kw: Any) -> str:
        values: dict[str, Any] = {"purpose": "appointment-booked", "target": "appointment",
                                  "patient_ref": "Patient/example-1", "resource_ref": "Appointment/example-9", **kw}
        with transaction(self.engine) as session:
            return self.store.mint(session, **values)

    def link_id(self, token: str) -> int:
        from portal_links.tables import LinkToken

        with Session(self.engine) as session:
            found = session.exec(select(col(LinkToken.id)).where(col(LinkToken.token_hash) == token_hash(token))).one()
        assert found is not None
        return found

    def post(self, token: str) -> httpx.Response:
        return httpx.post(f"{self.url}/l/{token}", follow_redirects=False, timeout=10,
                          headers={"User-Agent": "Mozilla/5.0 (synthetic test browser)"})


@pytest.fixture
def links(engine: Engine) -> Iterator[LinkSite]:
    store = LinkStore(LinkSigner(LINK_KEY), timedelta(hours=72), LINK_PORTS)
    application = FastAPI()
    application.include_router(build_link_router(store, engine, PORTAL))
    with serve_in_thread(application) as url:
        yield LinkSite(engine, url, store)


def assert_no_token_material(rows: list[AuditEvent], token: str) -> None:
    digest = token_hash(token)
    for row in rows:
        text = json.dumps(row.model_dump(), default=str)
        assert token not in text and token[:20] not in text
        assert digest.hex() not in text and digest.hex().upper() not in text


def test_opening_a_link_records_link_access_with_address_and_outcome(links: LinkSite) -> None:
    token = links.mint()
    assert httpx.get(f"{links.url}/l/{token}", timeout=10).status_code == 200  # a preview
    assert links.post(token).status_code == 303
    link = f"link/{links.link_id(token)}"
    rows = audit_rows(links.engine)
    assert [(r.kind, r.action, r.outcome, r.entity_ref, r.patient_ref, r.source) for r in rows] == [
        ("link-access", "R", "0", link, "Patient/example-1", "127.0.0.1"),
        ("link-access", "E", "0", link, "Patient/example-1", "127.0.0.1"),
    ]
    assert detail(rows[0])["outcome"] == "preview" and detail(rows[0])["method"] == "GET"
    assert detail(rows[1]) == {"outcome": "opened", "method": "POST", "ua_class": "browser"}
    assert_no_token_material(rows, token)


@pytest.mark.parametrize("forgery", ["other-key", "unknown-link", "garbage"])
def test_a_forged_token_records_link_access_and_a_security_alert(links: LinkSite, forgery: str) -> None:
    expires = utcnow() + timedelta(hours=1)
    token = {"other-key": LinkSigner(b"F" * 32).mint(expires),  # signed by someone else's key
             "unknown-link": LinkSigner(LINK_KEY).mint(expires),  # well signed, but no such link
             "garbage": "A" * 50}[forgery]
    assert links.post(token).status_code == 410
    access, alert = audit_rows(links.engine)
    expected = "unknown" if forgery == "unknown-link" else "malformed"
    assert (access.kind, access.outcome, access.entity_ref, access.source) == ("link-access", "8", None, "127.0.0.1")
    assert detail(access)["outcome"] == expected
    assert (alert.kind, alert.outcome, alert.source) == ("security-alert", "8", "127.0.0.1")
    assert detail(alert)["reason"] == "forged_token"
    assert_no_token_material([access, alert], token)


def test_an_expired_link_records_a_security_alert_with_outcome_4(links: LinkSite) -> None:
    token = links.mint(now=utcnow() - timedelta(hours=100))  # a 72-hour link minted 100 hours ago
    assert links.post(token).status_code == 410
    access, alert = audit_rows(links.engine)
    # Refused by its signed expiry before any lookup: the entries name no link and no patient.
    assert (access.kind, access.outcome, access.entity_ref, access.patient_ref) == (
        "link-access", "4", None, None)
    assert (alert.kind, alert.outcome, alert.entity_ref, detail(alert)["reason"]) == (
        "security-alert", "4", None, "expired_token")
    assert_no_token_material([access, alert], token)


def test_a_revoked_link_is_audited_as_an_admin_action_then_a_refused_access(links: LinkSite) -> None:
    from portal_links.revocation import revoke_link

    token = links.mint()
    assert revoke_link(links.engine, links.link_id(token), agent="cli:example-operator", ports=LINK_PORTS) == 1
    assert links.post(token).status_code == 410
    revoked, access = audit_rows(links.engine)
    assert (revoked.kind, revoked.agent, revoked.entity_ref) == ("admin", "cli:example-operator",
                                                                 f"link/{links.link_id(token)}")
    assert detail(revoked) == {"command": "links.revoke", "scope": "link", "revoked": 1}
    assert (access.kind, access.outcome, detail(access)["outcome"]) == ("link-access", "4", "revoked")
    assert len(audit_rows(links.engine, Kind.SECURITY_ALERT)) == 0  # revoked is not a forgery


# --- EHR notifications with a wrong or missing channel secret -----------------------------------


def test_a_wrong_or_missing_ehr_channel_secret_records_a_security_alert(engine: Engine) -> None:
    inbox = InboxStore(engine)
    application = FastAPI()
    application.include_router(build_intake_router(inbox, HOOK_MASTER, ["appointment"], 1 << 16,
                                                   on_refused=inbox.refused))
    good = authorization_header(derive_secret(HOOK_MASTER, "appointment"))
    wrong = authorization_header(derive_secret(b"W" * 32, "appointment"))
    with serve_in_thread(application) as url:
        endpoint = f"{url}/ehr/notify/appointment"
        assert httpx.post(endpoint, headers={"Authorization": wrong}, timeout=10).status_code == 403
        assert httpx.post(endpoint, timeout=10).status_code == 401
        assert httpx.post(endpoint, headers={"Authorization": good}, timeout=10).status_code == 200
    rows = audit_rows(engine)
    assert [(r.kind, r.outcome, r.source, r.agent, detail(r)["reason"]) for r in rows] == [
        ("security-alert", "8", "127.0.0.1", "ehr", "wrong_secret"),
        ("security-alert", "8", "127.0.0.1", "ehr", "missing_secret"),
    ]  # the accepted ping added no entry of its own
    assert all(detail(r)["subscription"] == "appointment" for r in rows)
    for secret in (good, wrong):
        assert not any(secret.split()[1] in json.dumps(r.model_dump(), default=str) for r in rows)
    with Session(engine) as session:
        assert len(session.exec(select(InboxEvent)).all()) == 1  # only the authenticated ping was stored


def test_a_flood_of_wrong_ehr_secrets_adds_one_alert_per_source_and_minute(engine: Engine) -> None:
    inbox = InboxStore(engine)
    application = FastAPI()
    application.include_router(build_intake_router(inbox, HOOK_MASTER, ["appointment"], 1 << 16,
                                                   on_refused=inbox.refused))
    wrong = authorization_header(derive_secret(b"W" * 32, "appointment"))
    with serve_in_thread(application) as url, httpx.Client(timeout=10) as client:
        codes = {client.post(f"{url}/ehr/notify/appointment", headers={"Authorization": wrong}).status_code
                 for _ in range(150)}
    assert codes == {403}
    reasons = [detail(row)["reason"] for row in audit_rows(engine)]
    # one in full per minute; a minute that ended during the flood adds its one summary entry
    assert reasons in (["wrong_secret"], ["wrong_secret", "wrong_secret", "refusals-summarised"]), reasons


# --- operator commands -----------------------------------------------------------------------------


def test_a_cli_consent_grant_records_an_admin_entry_naming_the_operator(
        database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", database_url)
    runner = CliRunner()
    assert runner.invoke(cli_app, ["consent", "grant", "Patient/example-1"]).exit_code == 0
    assert runner.invoke(cli_app, ["consent", "grant", "example-1"]).exit_code == 2  # refused: nothing recorded
    assert runner.invoke(cli_app, ["inbox", "retry", "99"]).exit_code == 0  # no such event: nothing changed
    assert runner.invoke(cli_app, ["links", "revoke", "--patient", "Patient/example-1"]).exit_code == 0
    with transaction(engine) as session:
        dead = InboxEvent(dedupe_key="appointment:ping:example", kind="ping", subscription_key="appointment",
                          state="dead", attempts=20, next_attempt_at=utcnow(), received_at=utcnow())
        session.add(dead)
        session.flush()
        dead_id = dead.id
    assert "queued again" in runner.invoke(cli_app, ["inbox", "retry", str(dead_id)]).output
    rows = audit_rows(engine)
    operator = f"cli:{getpass.getuser()}"
    assert [(r.kind, r.agent, r.patient_ref, r.entity_ref, detail(r)["command"]) for r in rows] == [
        ("admin", operator, "Patient/example-1", None, "consent.grant"),
        ("admin", operator, "Patient/example-1", None, "links.revoke"),
        ("admin", operator, None, f"inbox/{dead_id}", "inbox.retry"),
    ]
    assert detail(rows[0]) == {"command": "consent.grant", "status": "opted_in"}


# --- the mapping of writer outcomes that the real-server tests above do not reach --------------------


def test_a_reschedule_records_the_new_booking_and_the_cancelled_one() -> None:
    from adapter.audit.fhir_access import writeback_entries
    from ehr.writeback import WriteOutcome

    new = {"resourceType": "Appointment", "id": "example-10", "meta": {"versionId": "1"}}
    entries = writeback_entries("reschedule_pick", appointment_ref="Appointment/example-9",
                                patient_ref="Patient/example-1", write=WriteOutcome("rescheduled", new), task_ref=None)
    assert [(e.kind, e.action.value, e.entity_ref, e.outcome.value) for e in entries] == [
        (Kind.PATIENT_CREATE, "C", "Appointment/example-10/_history/1", "0"),
        (Kind.PATIENT_UPDATE, "U", "Appointment/example-9", "0")]


def test_a_conflict_that_persisted_records_a_failed_update_and_the_task_created_for_it() -> None:
    from adapter.audit.fhir_access import writeback_entries
    from ehr.writeback import WriteOutcome

    current = {"resourceType": "Appointment", "id": "example-9", "meta": {"versionId": "4"}}
    outcome = WriteOutcome("handoff", current, task_ref="Task/example-3",
                           detail="patient-requested-cancel; write conflict")
    entries = writeback_entries("cancel", appointment_ref="Appointment/example-9", patient_ref="Patient/example-1",
                                write=outcome, task_ref=outcome.task_ref)
    assert [(e.kind, e.entity_ref, e.outcome.value, e.detail.get("error")) for e in entries] == [
        (Kind.PATIENT_UPDATE, "Appointment/example-9/_history/4", "8", "FhirConflictError"),
        (Kind.PATIENT_CREATE, "Task/example-3", "0", None)]
