"""The non-clinical notice rules (documents ready, statement available, site closed or moved): when they
fire, what they render in every language and profile, that the PHI guard would stop what they must never
say, how the loader refuses a wrong notice rule, and when a notice may go out (quiet hours); and the decide
step's operator-notice batch on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.scheduling.decision import DecideItem
from adapter.scheduling.notices import is_notice_key, notice_due, quiet_release
from adapter.scheduling.reminder_gate import ReminderGate
from adapter.scheduling.reminders import ReminderPolicy
from adapter.scheduling.site_notices import SiteNotice, SiteNoticeError, earliest_per_patient, in_notice
from adapter.service import build_service
from adapter.settings import load_settings
from adapter.storage.db import transaction
from ehr.subscriptions import default_specs
from mappings.errors import MappingError, PhiLeakError, RenderError
from mappings.loader import load_rules
from mappings.phi_guard import check, identifying_strings
from mappings.policy import PhiProfile
from mappings.quiet_hours import QuietHours
from mappings.render import render
from mappings.rules import RuleSet
from tests.mappings.helpers import SITE_LABELS, context, write_rules
from tests.mappings.mapping_corpus import FakeMinter
from tests.support.synthetic import synthetic_patient
from whatsapp.catalogue import TemplateCatalogue

LANGUAGES = ("en_US", "es", "zh_CN")
PATIENT = {"resourceType": "Patient", "id": "notice-patient", "name": [{"family": "Quillfeather", "given": ["Odalys"]}],
           "telecom": [{"system": "phone", "value": "+1 201-555-0177", "use": "mobile"}], "birthDate": "1961-04-09"}
# Every string here is one a message must never carry (title, type, description, author, amount, item).
SECRETS = ("Psychiatric discharge summary", "Oncology referral letter", "Dr Eulalie Vantongeren", "Quillfeather",
           "4711.38", "4,711.38", "Chemotherapy infusion")


def document(status: str = "current") -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "id": "doc-1", "status": status, "docStatus": "final",
            "subject": {"reference": "Patient/notice-patient", "display": "Odalys Quillfeather"},
            "type": {"text": "Oncology referral letter",
                     "coding": [{"system": "http://loinc.org", "code": "57133-1", "display": "Referral note"}]},
            "description": "Psychiatric discharge summary",
            "author": [{"reference": "Practitioner/p1", "display": "Dr Eulalie Vantongeren"}],
            "content": [{"attachment": {"contentType": "application/pdf", "title": "Psychiatric discharge summary"}}]}


def invoice(status: str = "issued") -> dict[str, Any]:
    return {"resourceType": "Invoice", "id": "inv-1", "status": status,
            "subject": {"reference": "Patient/notice-patient"},
            "totalGross": {"value": 4711.38, "currency": "USD"}, "totalNet": {"value": 4711.38, "currency": "USD"},
            "lineItem": [{"sequence": 1, "chargeItemCodeableConcept": {"text": "Chemotherapy infusion"},
                          "priceComponent": [{"type": "base", "amount": {"value": 4711.38, "currency": "USD"}}]}]}


def appointment(start: str = "2026-12-24T15:30:00Z", site: str = "Location/synthetic-north", status: str = "booked",
                patient: str = "Patient/notice-patient", appointment_id: str = "appt-1") -> dict[str, Any]:
    return {"resourceType": "Appointment", "id": appointment_id, "status": status, "start": start,
            "description": "Oncology follow-up",
            "participant": [{"actor": {"reference": patient, "display": "Odalys Quillfeather"}, "status": "accepted"},
                            {"actor": {"reference": site, "display": "Oncology Day Unit"}, "status": "accepted"}]}


def _sent_text(template: dict[str, Any]) -> str:
    return json.dumps(template, ensure_ascii=False)


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_the_notice_rules_fire_on_the_right_statuses_only(rule_sets: dict[PhiProfile, RuleSet],
                                                          profile: PhiProfile) -> None:
    rules = rule_sets[profile]
    assert [r.id for r in rules.firing("DocumentReference", None, "current")] == ["document-ready"]
    assert [r.id for r in rules.firing("DocumentReference", "current", "superseded")] == []
    assert [r.id for r in rules.firing("DocumentReference", None, "entered-in-error")] == []
    assert [r.id for r in rules.firing("DocumentReference", "current", "current")] == []
    assert [r.id for r in rules.firing("Invoice", "draft", "issued")] == ["statement-available"]
    for status in ("draft", "cancelled", "balanced", "entered-in-error"):
        assert rules.firing("Invoice", None, status) == []
    # Operator notices are never fired by an EHR change, only looked up by name.
    assert all(r.operator_notice is None for r in rules.for_resource("Appointment"))
    closed, moved = rules.operator("site-closed"), rules.operator("site-moved")
    assert closed is not None and closed.id == "site-closed-notice" and moved is not None
    assert rules.resource_types() == {"Appointment", "DiagnosticReport", "DocumentReference", "Invoice"}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize(("rule_id", "resource", "template", "target"), [
    ("document-ready", document(), "documents_ready", "document"),
    ("statement-available", invoice(), "statement_available", "statement"),
])
def test_documents_and_statements_say_only_that_something_is_in_the_portal(
        rule_sets: dict[PhiProfile, RuleSet], language: str, profile: PhiProfile, rule_id: str,
        resource: dict[str, Any], template: str, target: str) -> None:
    rule = rule_sets[profile].get(rule_id)
    assert rule is not None
    minter = FakeMinter(rule_id)
    rendered = render(rule, resource, context(language=language, profile=profile, minter=minter))
    assert rendered["name"] == template and rendered["language"]["code"] == language
    assert [c["type"] for c in rendered["components"]] == ["button", "button"]  # no body parameter at all
    url, staff = rendered["components"]
    assert url["sub_type"] == "url" and url["parameters"][0]["text"] == minter.minted[0]
    assert staff["sub_type"] == "quick_reply"
    check(rendered, identifying_strings(resource, PATIENT), public=SITE_LABELS.values())
    text = _sent_text(rendered)
    for secret in SECRETS:
        assert secret not in text
    assert "4711" not in text and "USD" not in text


def test_the_link_targets_lead_to_the_portals_documents_and_billing_pages() -> None:
    from portal_links.store import PORTAL_PATHS

    assert PORTAL_PATHS["document"] == "/documents" and PORTAL_PATHS["statement"] == "/billing"


def test_the_guard_would_stop_a_document_title_or_an_amount(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    """What the rules cannot ask for, the guard still catches: a template edited to carry the title, the
    author or the amount is refused before it is queued."""
    for resource, leaked in ((document(), "Psychiatric discharge summary"), (document(), "Dr Eulalie Vantongeren"),
                             (invoice(), "Chemotherapy infusion")):
        forged = {"name": "x", "language": {"code": "en_US"},
                  "components": [{"type": "body", "parameters": [{"type": "text", "text": f"About {leaked}"}]}]}
        with pytest.raises(PhiLeakError) as caught:
            check(forged, identifying_strings(resource, PATIENT))
        assert leaked not in str(caught.value)


@pytest.mark.parametrize("language", LANGUAGES)
def test_site_notices_carry_the_site_label_and_the_date_only(rule_sets: dict[PhiProfile, RuleSet],
                                                             language: str) -> None:
    rules = rule_sets["default"]
    closed, moved = rules.operator("site-closed"), rules.operator("site-moved")
    assert closed is not None and moved is not None
    resource = appointment()
    identifying = identifying_strings(resource, PATIENT)
    ctx = context(language=language)
    rendered = render(closed, resource, ctx)
    body = [p["text"] for p in rendered["components"][0]["parameters"]]
    assert rendered["name"] == "site_notice_closed" and len(body) == 2
    assert body[0] == "North Campus" and "24" in body[1]  # 10:30 in New York on 2026-12-24
    check(rendered, identifying, public=ctx.public_labels)
    assert "Oncology" not in _sent_text(rendered) and "Quillfeather" not in _sent_text(rendered)
    ctx_moved = replace(context(language=language), new_site_label="South Wing")
    rendered = render(moved, resource, ctx_moved)
    assert [p["text"] for p in rendered["components"][0]["parameters"]][::2] == ["North Campus", "South Wing"]
    check(rendered, identifying, public=ctx_moved.public_labels)
    for label in (None, "Oncology Day Unit"):  # no new site, or one that is not a configured label
        wrong = replace(ctx_moved, new_site_label=label)
        with pytest.raises(RenderError, match="new_site_label"):
            render(moved, resource, wrong)


def test_the_strict_profile_sends_the_site_notice_without_site_or_date(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    moved = rule_sets["strict"].operator("site-moved")
    assert moved is not None
    rendered = render(moved, appointment(), context(profile="strict"))
    assert rendered["name"] == "site_notice_minimal"
    assert [c["type"] for c in rendered["components"]] == ["button"]


@pytest.mark.parametrize(("rule", "problem"), [
    ("{id: r, resource: Invoice, when: {operator_notice: site-closed}, template: {default: site_notice_closed}, "
     "body: [{kind: site_label}, {kind: local_date, source: Invoice.date}], "
     "buttons: [{kind: action_token, action: talk_to_staff}]}", "set resource: Appointment"),
    ("{id: r, resource: Appointment, when: {operator_notice: site-closed}, template: {default: site_notice_moved}, "
     "body: [{kind: site_label}, {kind: local_date, source: Appointment.start}, {kind: new_site_label}], "
     "buttons: [{kind: action_token, action: talk_to_staff}]}", "only known to a rule with operator_notice"),
    ("{id: r, resource: Appointment, when: {status_enters: [booked], operator_notice: site-moved}, "
     "template: {default: site_notice_minimal}, buttons: [{kind: action_token, action: talk_to_staff}]}",
     "exactly one of status_enters"),
    ("{id: r, resource: Appointment, when: {}, template: {default: site_notice_minimal}, "
     "buttons: [{kind: action_token, action: talk_to_staff}]}", "exactly one of status_enters"),
    ("{id: r, resource: Invoice, when: {status_enters: [issud]}, template: {default: statement_available}, "
     "buttons: [{kind: link_token, target: statement}, {kind: action_token, action: talk_to_staff}]}",
     "'issud' is not an R4 Invoice status"),
    ("{id: r, resource: DocumentReference, when: {status_enters: [current]}, template: {default: documents_ready}, "
     "buttons: [{kind: link_token, target: documnt}, {kind: action_token, action: talk_to_staff}]}", "buttons[0]"),
])
def test_the_loader_refuses_a_wrong_notice_rule(tmp_path: Path, catalogue: TemplateCatalogue, rule: str,
                                                problem: str) -> None:
    folder = write_rules(tmp_path / "rules", f"rules:\n  - {rule}\n")
    with pytest.raises(MappingError) as refused:
        load_rules(folder, catalogue, "default")
    assert problem in str(refused.value)


def test_notices_wait_out_the_quiet_hours_and_other_messages_do_not() -> None:
    zone = ZoneInfo("America/New_York")
    quiet = QuietHours(time(21, 0), time(8, 0))
    night = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # 22:00 in New York
    morning = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)  # 08:00
    assert quiet_release(night, zone, quiet) == morning
    assert notice_due(night, zone, quiet) == morning
    assert notice_due(morning + (morning - night), zone, quiet) == morning + (morning - night)  # daytime: now
    assert notice_due(night, zone, None) == night
    gate = ReminderGate(ReminderPolicy(zone=zone, quiet=quiet))
    assert gate("notice:document-ready:DocumentReference/doc-1", night) == morning
    assert gate("appointment-booked-confirmation:Appointment/a", night) is None
    assert gate("notice:document-ready:DocumentReference/doc-1", morning) is None
    assert is_notice_key("notice:x:y") and not is_notice_key("survey:Appointment/a")


def test_a_site_notice_is_checked_before_anything_is_searched() -> None:
    good = SiteNotice("Location/synthetic-north", date(2026, 12, 24), date(2026, 12, 26), "closed")
    good.check(SITE_LABELS)
    for wrong, message in [
        (SiteNotice("Location/nowhere", date(2026, 12, 24), date(2026, 12, 26), "closed"), "site_labels"),
        (SiteNotice("Location/synthetic-north", date(2026, 12, 26), date(2026, 12, 24), "closed"), "ends before"),
        (SiteNotice("Location/synthetic-north", date(2026, 1, 1), date(2026, 12, 31), "closed"), "longer than"),
        (SiteNotice("Location/synthetic-north", date(2026, 12, 24), date(2026, 12, 24), "moved"), "--new-site"),
        (SiteNotice("Location/synthetic-north", date(2026, 12, 24), date(2026, 12, 24), "moved", "North Campus"),
         "--new-site"),
        (SiteNotice("Location/synthetic-north", date(2026, 12, 24), date(2026, 12, 24), "closed", "South Wing"),
         "only for a 'moved'"),
    ]:
        with pytest.raises(SiteNoticeError, match=message):
            wrong.check(SITE_LABELS)
    begin, end = good.window(ZoneInfo("America/New_York"))
    assert (begin, end) == (datetime(2026, 12, 24, 5, tzinfo=UTC), datetime(2026, 12, 27, 5, tzinfo=UTC))


def test_only_booked_appointments_at_the_site_in_the_range_count_once_per_patient() -> None:
    begin, end = datetime(2026, 12, 24, 5, tzinfo=UTC), datetime(2026, 12, 27, 5, tzinfo=UTC)
    site = "Location/synthetic-north"
    assert in_notice(appointment(), site, begin, end)
    assert not in_notice(appointment(status="cancelled"), site, begin, end)
    assert not in_notice(appointment(site="Location/1"), site, begin, end)
    assert not in_notice(appointment(start="2026-12-27T05:00:00Z"), site, begin, end)  # the day after the range
    assert not in_notice(appointment(start="2026-12-24T04:59:00Z"), site, begin, end)  # the evening before
    later, earlier = appointment(start="2026-12-26T15:00:00Z", appointment_id="b"), appointment(appointment_id="a")
    other = appointment(patient="Patient/other", appointment_id="c")
    chosen = earliest_per_patient([later, other, earlier])
    assert {ref: a["id"] for ref, a in chosen.items()} == {"Patient/notice-patient": "a", "Patient/other": "c"}


def test_the_notice_feeds_are_wanted_only_for_types_with_rules(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    assert [s.key for s in default_specs()] == ["appointment", "diagnostic-report"]
    wanted = default_specs("header", rule_sets["default"].resource_types())
    assert [(s.key, s.criteria) for s in wanted] == [
        ("appointment", "Appointment"), ("diagnostic-report", "DiagnosticReport"),
        ("document-reference", "DocumentReference"), ("invoice", "Invoice")]


def test_the_decide_step_queues_a_notice_once_per_key_and_waits_out_the_quiet_hours(engine: Engine) -> None:
    """On SQLite and PostgreSQL: an operator's notice run twice queues once and records its skip once; with
    the quiet hours now, the row is due at their end."""
    decider = build_service(load_settings(mode="demo", site_labels=SITE_LABELS, quiet_hours=None),
                            engine=engine).decider
    with transaction(engine) as session:
        set_consent(session, "Patient/p1", OPTED_IN, "admin")
    closed = decider.rules.operator("site-closed")
    assert closed is not None
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()
    booked = {**appointment(start=start, patient="Patient/p1"), "meta": {"versionId": "1"}}
    not_asked = {**appointment(start=start, patient="Patient/p2", appointment_id="appt-2"), "meta": {"versionId": "1"}}
    items = [(DecideItem(booked, synthetic_patient(number=61, patient_id="p1")), "notice:site-closed-notice:k1"),
             (DecideItem(not_asked, synthetic_patient(number=62, patient_id="p2")), "notice:site-closed-notice:k2")]
    first = decider.record_notice(closed, items)
    assert [d.queued for d in first] == [["notice:site-closed-notice:k1"], []]
    assert first[1].skipped == [("site-closed-notice", "no_opt_in")]
    second = decider.record_notice(closed, items)  # the same notice again: nothing new, no duplicate skip
    assert [d.queued for d in second] == [[], []] and second[1].skipped == [("site-closed-notice", "no_opt_in")]
    now = datetime.now(ZoneInfo("America/New_York"))
    decider.quiet = QuietHours.parse(f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}")
    decider.record_notice(closed, [(items[0][0], "notice:site-closed-notice:k3")])
    with Session(engine) as session:
        rows = {row.natural_key: row for row in session.exec(select(OutboxMessage))}
        skips = session.exec(select(NotificationSkip).where(col(NotificationSkip.rule_id) == closed.id)).all()
    assert len(skips) == 1
    held = rows["notice:site-closed-notice:k3"].due_at.replace(tzinfo=UTC)
    assert held - rows["notice:site-closed-notice:k1"].due_at.replace(tzinfo=UTC) > timedelta(minutes=55)
