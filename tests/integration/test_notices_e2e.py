"""Non-clinical notices end to end over real HTTP: the real sekmet-fhir EHR notifies the real service,
which sends through the emulator ("documents ready", "statement available"); and an operator's site notice
run through the real ``bridge notices site-closure`` command against the same EHR and database.
One stack per module; each test makes its own synthetic patients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from adapter.cli.notices import notices_app
from adapter.demo.stack import DEMO_SITE, DemoStack, start_stack, wait_for
from adapter.feeds.tables import ResourceState
from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.storage.db import make_engine
from ehr.intake_parsing import DEFAULT_SUPPORTED_TYPES
from ehr.patient import patient_reference
from mappings.kinds import local_date_text
from mappings.phi_guard import check, identifying_strings
from tests.support.e2e import create, ehr_client, patient, read, sent_to
from tests.support.synthetic import synthetic_appointment

pytestmark = pytest.mark.fhir

SOUTH, EAST = "Location/demo-site-south", "Location/demo-site-east"
LABELS = {DEMO_SITE: "North Campus", SOUTH: "South Wing", EAST: "East Clinic"}
ZONE = ZoneInfo("America/New_York")  # the demo's site_timezone
SECRETS = ("Psychiatric discharge summary", "Oncology referral letter", "Dr Eulalie Vantongeren", "4711")
# The notice feeds need the EHR's DocumentReference/Invoice notifications accepted and their subject read as
# the patient (ehr.intake_parsing, ehr.patient) and subscribed to (adapter.service); until then, skip.
FEEDS_WIRED = ({"DocumentReference", "Invoice"} <= DEFAULT_SUPPORTED_TYPES and patient_reference(
    {"resourceType": "Invoice", "subject": {"reference": "Patient/x"}}) == "Patient/x")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("notices"), dispatch_backoff_seconds=0.2, site_labels=LABELS,
                        quiet_hours=None)
    yield stack
    stack.stop()


@pytest.fixture
def feeds(stack: DemoStack) -> DemoStack:
    if not FEEDS_WIRED or not {"document-reference", "invoice"} <= set(stack.service.specs):
        pytest.skip("the DocumentReference/Invoice feeds are not wired into the service yet")
    wait_for(lambda: _subscribed(stack), 30, "the notice subscriptions")
    return stack


def _subscribed(stack: DemoStack) -> bool:
    with ehr_client(stack) as client:
        subs = [e["resource"] for e in client.get("/Subscription").json().get("entry", [])]
    return {"DocumentReference", "Invoice"} <= {s["criteria"] for s in subs if s.get("status") == "active"}


def _rows(stack: DemoStack, **where: str) -> list[OutboxMessage]:
    with Session(make_engine(stack.settings.database_url)) as session:
        query = select(OutboxMessage)
        for name, value in where.items():
            query = query.where(col(getattr(OutboxMessage, name)) == value)
        return list(session.exec(query))


def _processed(stack: DemoStack, resource: dict[str, Any]) -> bool:
    """The decide step has handled this version (so anything it would queue is queued)."""
    with Session(make_engine(stack.settings.database_url)) as session:
        state = session.get(ResourceState, (resource["resourceType"], resource["id"]))
        return state is not None and state.version_id == resource["meta"]["versionId"]


def _update(stack: DemoStack, resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    with ehr_client(stack) as client:
        response = client.put(f"/{resource['resourceType']}/{resource['id']}", json={**resource, **changes})
        response.raise_for_status()
        return dict(response.json())


def _open_link(stack: DemoStack, template: dict[str, Any]) -> str:
    """Resolves the message's portal link through the service's /l/ endpoint; returns where it leads."""
    [url_button] = [c for c in template["components"] if c.get("sub_type") == "url"]
    link = f"{stack.settings.public_base_url}/l/{url_button['parameters'][0]['text']}"
    assert httpx.get(link, timeout=5).status_code == 200
    opened = httpx.post(link, timeout=5)
    assert opened.status_code == 303
    return str(opened.headers["location"])


def _document(patient_ref: str, status: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": status, "docStatus": "final",
            "subject": {"reference": patient_ref}, "description": "Psychiatric discharge summary",
            "type": {"text": "Oncology referral letter"},
            "author": [{"display": "Dr Eulalie Vantongeren"}],
            "content": [{"attachment": {"contentType": "application/pdf", "title": "Psychiatric discharge summary"}}]}


def _invoice(patient_ref: str, status: str) -> dict[str, Any]:
    return {"resourceType": "Invoice", "status": status, "subject": {"reference": patient_ref},
            "totalGross": {"value": 4711.38, "currency": "USD"},
            "lineItem": [{"sequence": 1, "chargeItemCodeableConcept": {"text": "Oncology referral letter"}}]}


def test_a_current_document_sends_one_phi_free_notice_with_a_working_link(feeds: DemoStack) -> None:
    stack = feeds
    patient_ref = patient(stack, 41)
    document = create(stack, _document(patient_ref, "current"))
    [message] = wait_for(lambda: sent_to(stack, 41), 20, "documents ready")
    template = message["template"]
    assert template["name"] == "documents_ready"
    text = json.dumps(template)
    for secret in (*SECRETS, document["id"], patient_ref.split("/")[1], "Testpatient"):
        assert secret not in text
    check(template, identifying_strings(document, read(stack, patient_ref)))  # what the guard checked, again
    assert _open_link(stack, template) == f"{stack.settings.portal_base_url}/documents"
    superseded = _update(stack, document, status="superseded")
    wait_for(lambda: _processed(stack, superseded), 20, "the superseded version decided")
    assert len(_rows(stack, rule_id="document-ready", patient_ref=patient_ref)) == 1
    assert len(sent_to(stack, 41)) == 1


def test_superseded_entered_in_error_and_opted_out_documents_send_nothing(feeds: DemoStack) -> None:
    stack = feeds
    patient_ref, opted_out = patient(stack, 42), patient(stack, 43, consent=False)
    for resource in (_document(patient_ref, "superseded"), _document(patient_ref, "entered-in-error")):
        created = create(stack, resource)
        wait_for(partial(_processed, stack, created), 20, "the document decided")
    not_asked = create(stack, _document(opted_out, "current"))
    wait_for(lambda: _processed(stack, not_asked), 20, "the opted-out patient's document decided")
    assert _rows(stack, patient_ref=patient_ref) == [] and _rows(stack, patient_ref=opted_out) == []
    with Session(make_engine(stack.settings.database_url)) as session:
        skips = session.exec(select(NotificationSkip).where(
            col(NotificationSkip.resource_ref) == f"DocumentReference/{not_asked['id']}")).all()
    assert [skip.reason for skip in skips] == ["no_opt_in"]


def test_an_issued_invoice_sends_one_statement_notice_without_an_amount(feeds: DemoStack) -> None:
    stack = feeds
    patient_ref = patient(stack, 44)
    cancelled = create(stack, _invoice(patient_ref, "cancelled"))
    draft = create(stack, _invoice(patient_ref, "draft"))
    for resource in (cancelled, draft):
        wait_for(partial(_processed, stack, resource), 20, "the invoice decided")
    assert _rows(stack, patient_ref=patient_ref) == []
    issued = _update(stack, draft, status="issued")
    [message] = wait_for(lambda: sent_to(stack, 44), 20, "statement available")
    template = message["template"]
    assert template["name"] == "statement_available"
    text = json.dumps(template)
    for secret in (*SECRETS, "USD", issued["id"]):
        assert secret not in text
    assert _open_link(stack, template) == f"{stack.settings.portal_base_url}/billing"
    balanced = _update(stack, issued, status="balanced")
    wait_for(lambda: _processed(stack, balanced), 20, "the balanced invoice decided")
    assert len(_rows(stack, rule_id="statement-available", patient_ref=patient_ref)) == 1


# --- operator notices: site closed or moved


def _booked(stack: DemoStack, number: int, site: str, days: int, *, consent: bool = True,
            status: str = "booked") -> tuple[str, dict[str, Any]]:
    patient_ref = patient(stack, number, consent=consent)
    start = (datetime.now(UTC) + timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    appointment = create(stack, synthetic_appointment(patient_ref, start=start, location_ref=site,
                                                      status=status))  # type: ignore[arg-type]
    return patient_ref, appointment


def _cli(stack: DemoStack, monkeypatch: pytest.MonkeyPatch, *args: str, quiet: str = "") -> str:
    """Runs ``bridge notices site-closure`` with the stack's settings, as an operator would."""
    settings = stack.settings
    for name, value in {"MODE": "demo", "DATABASE_URL": settings.database_url, "FHIR_BASE_URL": stack.ehr.base_url,
                        "PUBLIC_BASE_URL": settings.public_base_url, "PORTAL_BASE_URL": settings.portal_base_url,
                        "SITE_LABELS": json.dumps(LABELS), "QUIET_HOURS": quiet}.items():
        monkeypatch.setenv(f"BRIDGE_{name}", value)
    result = CliRunner().invoke(notices_app, ["site-closure", *args])
    assert result.exit_code == 0, result.output
    return str(result.output)


def _notices(stack: DemoStack, number: int, template: str) -> list[dict[str, Any]]:
    return [m["template"] for m in sent_to(stack, number) if m.get("template", {}).get("name") == template]


def _range(*days: int) -> list[str]:
    today = datetime.now(ZONE).date()
    return ["--from", str(today + timedelta(days=days[0])), "--to", str(today + timedelta(days=days[1]))]


def test_a_closure_reaches_exactly_the_opted_in_patients_booked_there_then_and_only_once(
        stack: DemoStack, monkeypatch: pytest.MonkeyPatch) -> None:
    in_range, first = _booked(stack, 51, DEMO_SITE, 3)
    twice, earliest = _booked(stack, 52, DEMO_SITE, 3)
    create(stack, synthetic_appointment(twice, start=datetime.fromisoformat(earliest["start"]) + timedelta(days=1),
                                        location_ref=DEMO_SITE))
    _booked(stack, 53, DEMO_SITE, 12)  # outside the range
    _booked(stack, 54, SOUTH, 3)  # another site
    _booked(stack, 55, DEMO_SITE, 3, status="cancelled")
    _booked(stack, 56, DEMO_SITE, 3, consent=False)
    args = ["--site", DEMO_SITE, *_range(2, 5), "--kind", "closed"]
    output = _cli(stack, monkeypatch, *args)
    assert "4 appointment(s) matched; 2 patient(s) queued" in output and "no_opt_in 1" in output
    for number, appointment in ((51, first), (52, earliest)):
        [notice] = wait_for(partial(_notices, stack, number, "site_notice_closed"), 20, "the closure")
        body = [p["text"] for p in notice["components"][0]["parameters"]]
        start = datetime.fromisoformat(appointment["start"]).astimezone(ZONE)
        assert body == ["North Campus", local_date_text(start, "en_US")]  # the site label and the date only
    again = _cli(stack, monkeypatch, *args)
    assert "0 patient(s) queued, 2 already notified" in again
    assert sorted(row.patient_ref for row in _rows(stack, rule_id="site-closed-notice")) == sorted([in_range, twice])
    for number in (53, 54, 55, 56):
        assert _notices(stack, number, "site_notice_closed") == []
    assert len(_notices(stack, 51, "site_notice_closed")) == len(_notices(stack, 52, "site_notice_closed")) == 1


def test_a_move_names_the_new_site_and_quiet_hours_hold_a_notice(
        stack: DemoStack, monkeypatch: pytest.MonkeyPatch) -> None:
    _booked(stack, 58, SOUTH, 4)
    # From the 4th day: the South Wing booking of the closure test (3rd day) is not in this range.
    output = _cli(stack, monkeypatch, "--site", SOUTH, *_range(4, 5), "--kind", "moved", "--new-site", "East Clinic")
    assert "1 patient(s) queued" in output
    [notice] = wait_for(lambda: _notices(stack, 58, "site_notice_moved"), 20, "the move")
    body = [p["text"] for p in notice["components"][0]["parameters"]]
    assert body[0] == "South Wing" and body[2] == "East Clinic"
    held, _ = _booked(stack, 59, EAST, 4)
    now = datetime.now(ZONE)
    window = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"  # the quiet hours are now
    assert "1 patient(s) queued" in _cli(stack, monkeypatch, "--site", EAST, *_range(3, 5), "--kind", "closed",
                                         quiet=window)
    [row] = _rows(stack, rule_id="site-closed-notice", patient_ref=held)
    due = row.due_at.replace(tzinfo=UTC) if row.due_at.tzinfo is None else row.due_at
    assert row.state == "queued" and timedelta(minutes=55) < due - datetime.now(UTC) < timedelta(minutes=61)
    assert _notices(stack, 59, "site_notice_closed") == []
