"""Rendering: the Cloud API template object, dates and times per language and zone, labels, tokens."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mappings.errors import RenderError
from mappings.loader import load_rules
from mappings.policy import PhiProfile
from mappings.render import render
from mappings.rules import Rule, RuleSet
from tests.mappings.helpers import PUBLIC_BASE_URL, context, fixture, write_rules
from tests.mappings.mapping_corpus import FakeMinter
from whatsapp.catalogue import TemplateCatalogue


def appointment_rule(rule_sets: dict[PhiProfile, RuleSet]) -> Rule:
    return rule_sets["default"].for_resource("Appointment")[0]


def booked(start: Any = "2026-12-01T15:30:00Z", **changes: Any) -> dict[str, Any]:
    resource = fixture("synthetic__appointment-pending.json")
    resource["status"] = "booked"
    if start is None:
        del resource["start"]
    else:
        resource["start"] = start
    resource.update(changes)
    return resource


def body_texts(template: dict[str, Any]) -> list[str]:
    body = [c for c in template["components"] if c["type"] == "body"]
    return [p["text"] for p in body[0]["parameters"]] if body else []


def test_appointment_renders_exactly_the_cloud_api_template_object(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    minter = FakeMinter("Appointment/synthetic-appt-pending")
    template = render(appointment_rule(rule_sets), booked(), context(minter=minter))
    confirm, reschedule, cancel, staff = minter.minted
    assert template == {
        "name": "appointment_confirmation",
        "language": {"code": "en_US"},
        "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": "Tuesday, December 1, 2026"},
                {"type": "text", "text": "10:30 AM"},
                {"type": "text", "text": "North Campus"},
            ]},
            {"type": "button", "sub_type": "quick_reply", "index": "0",
             "parameters": [{"type": "payload", "payload": confirm}]},
            {"type": "button", "sub_type": "quick_reply", "index": "1",
             "parameters": [{"type": "payload", "payload": reschedule}]},
            {"type": "button", "sub_type": "quick_reply", "index": "2",
             "parameters": [{"type": "payload", "payload": cancel}]},
            {"type": "button", "sub_type": "quick_reply", "index": "3",
             "parameters": [{"type": "payload", "payload": staff}]},
        ],
    }


def test_spanish_formats_date_and_24_hour_time(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    template = render(appointment_rule(rule_sets), booked(), context(language="es"))
    assert template["language"] == {"code": "es"}
    assert body_texts(template) == ["martes, 1 de diciembre de 2026", "10:30", "North Campus"]


@pytest.mark.parametrize(("start", "zone", "date", "time"), [
    # the instant's own offset is irrelevant; only the site zone decides the local date and time
    ("2021-09-24T12:45:00+05:30", "America/New_York", "Friday, September 24, 2021", "3:15 AM"),
    ("2026-12-01T23:30:00-05:00", "Europe/Madrid", "Wednesday, December 2, 2026", "5:30 AM"),
    ("2026-12-01T23:30:00-05:00", "Pacific/Honolulu", "Tuesday, December 1, 2026", "6:30 PM"),
    ("2026-12-01T10:30:00.123456789Z", "UTC", "Tuesday, December 1, 2026", "10:30 AM"),
    # US spring forward (2026-03-08 02:00 EST -> 03:00 EDT)
    ("2026-03-08T06:30:00Z", "America/New_York", "Sunday, March 8, 2026", "1:30 AM"),
    ("2026-03-08T07:30:00Z", "America/New_York", "Sunday, March 8, 2026", "3:30 AM"),
    # US fall back (2026-11-01 02:00 EDT -> 01:00 EST): both instants read 1:30 AM
    ("2026-11-01T05:30:00Z", "America/New_York", "Sunday, November 1, 2026", "1:30 AM"),
    ("2026-11-01T06:30:00Z", "America/New_York", "Sunday, November 1, 2026", "1:30 AM"),
    # Europe's change is on a different Sunday (2026-03-29): New York is already on EDT, Madrid not yet
    ("2026-03-20T14:00:00Z", "Europe/Madrid", "Friday, March 20, 2026", "3:00 PM"),
    ("2026-03-30T14:00:00Z", "Europe/Madrid", "Monday, March 30, 2026", "4:00 PM"),
])
def test_local_date_and_time_follow_the_site_zone(
    rule_sets: dict[PhiProfile, RuleSet], start: str, zone: str, date: str, time: str
) -> None:
    texts = body_texts(render(appointment_rule(rule_sets), booked(start), context(zone=zone)))
    assert texts[:2] == [date, time]


def test_time_uses_a_plain_space_before_am_pm(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    # CLDR writes U+202F there; it shows as a box on older phones
    time = body_texts(render(appointment_rule(rule_sets), booked(), context()))[1]
    assert "\u202f" not in time and "\u00a0" not in time


@pytest.mark.parametrize(("start", "reason"), [
    ("2026-12-01", "is a date without a time of day"),
    ("2026-12", "is a date without a time of day"),
    ("2026-12-01T10:30:00", "has a time but no time-zone offset"),
    ("2026-12-01T10:30Z", "is not a FHIR dateTime"),
    ("tomorrow morning", "is not a FHIR dateTime"),
    ("2026-02-30T10:30:00Z", "is not a real calendar moment"),
    (None, "selected nothing"),
])
def test_an_uncertain_moment_is_refused_not_guessed(
    rule_sets: dict[PhiProfile, RuleSet], start: str | None, reason: str
) -> None:
    with pytest.raises(RenderError) as caught:
        render(appointment_rule(rule_sets), booked(start), context())
    error = caught.value
    assert (error.rule_id, error.where, error.kind) == ("appointment-booked-confirmation", "body[0]", "local_date")
    assert reason in str(error)
    if start:
        assert start not in str(error)


def test_several_values_for_one_moment_are_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = (Path(__file__).parents[2] / "mappings/rules/appointment.yaml").read_text(encoding="utf-8")
    text = text.replace('{kind: local_time, source: "Appointment.start"}',
                        '{kind: local_time, source: "Appointment.start | Appointment.end"}')
    rule = load_rules(write_rules(tmp_path, text), catalogue, "default").for_resource("Appointment")[0]
    with pytest.raises(RenderError, match=r"selected 2 values; exactly one moment is needed"):
        render(rule, booked(), context())


@pytest.mark.parametrize(("reference", "labels", "expected"), [
    ("Location/synthetic-north", None, "North Campus"),
    ("https://ehr.example.org/fhir/Location/synthetic-north/_history/7", None, "North Campus"),
    ("Location/unlisted", None, "Main Campus"),
    ("Location/synthetic-north", {}, "Main Campus"),
])
def test_site_label_comes_from_configuration_never_from_fhir(
    rule_sets: dict[PhiProfile, RuleSet], reference: str, labels: dict[str, str] | None, expected: str
) -> None:
    resource = booked()
    resource["participant"][2]["actor"]["reference"] = reference
    texts = body_texts(render(appointment_rule(rule_sets), resource, context(labels=labels)))
    assert texts[2] == expected
    assert "Synthetic North Oncology Pavilion" not in str(texts)


def test_first_configured_location_wins(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    resource = booked()
    resource["participant"].insert(0, {"actor": {"reference": "Location/unlisted"}})
    resource["participant"].append({"actor": {"reference": "Location/1"}})
    assert body_texts(render(appointment_rule(rule_sets), resource, context()))[2] == "North Campus"


@pytest.mark.parametrize("language", ["en_US", "es"])
def test_strict_profile_sends_the_minimal_template_without_body(
    rule_sets: dict[PhiProfile, RuleSet], language: str
) -> None:
    rule = rule_sets["strict"].for_resource("Appointment")[0]
    template = render(rule, booked(), context(language=language, profile="strict"))
    assert template["name"] == "appointment_confirmation_minimal"
    assert [c["type"] for c in template["components"]] == ["button"] * 4


def test_results_ready_has_a_url_button_with_the_link_token(
    rule_sets: dict[PhiProfile, RuleSet], catalogue: TemplateCatalogue
) -> None:
    rule = rule_sets["default"].for_resource("DiagnosticReport")[0]
    minter = FakeMinter("DiagnosticReport/synthetic-report-amended")
    report = fixture("synthetic__diagnosticreport-amended.json")
    template = render(rule, report, context(language="es", minter=minter))
    link, staff = minter.minted
    assert template == {
        "name": "results_ready",
        "language": {"code": "es"},
        "components": [
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": link}]},
            {"type": "button", "sub_type": "quick_reply", "index": "1",
             "parameters": [{"type": "payload", "payload": staff}]},
        ],
    }
    url = catalogue.get("results_ready", "es").buttons[0].url  # type: ignore[union-attr]
    assert url == f"{PUBLIC_BASE_URL}/l/{{{{1}}}}"


@pytest.mark.parametrize("bad_token", ["Synthetic Testpatient", "short", "tok/../x" + "a" * 10, 12345678, "x" * 513])
def test_a_minter_returning_something_not_opaque_is_refused(
    rule_sets: dict[PhiProfile, RuleSet], bad_token: Any
) -> None:
    ctx = context()
    ctx = type(ctx)(**{**ctx.__dict__, "mint_action": lambda action: bad_token})
    with pytest.raises(RenderError, match="is not an opaque token") as caught:
        render(appointment_rule(rule_sets), booked(), ctx)
    assert caught.value.where == "buttons[0]"
    assert str(bad_token) not in str(caught.value)


def test_a_language_the_template_is_not_approved_in_is_refused(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    with pytest.raises(RenderError, match="not approved in 'fr'"):
        render(appointment_rule(rule_sets), booked(), context(language="fr"))


def test_a_strict_context_never_renders_a_default_only_rule(
    tmp_path: Path, catalogue: TemplateCatalogue
) -> None:
    text = (Path(__file__).parents[2] / "mappings/rules/appointment.yaml").read_text(encoding="utf-8")
    text = text.replace("      strict: appointment_confirmation_minimal", "")
    rule = load_rules(write_rules(tmp_path, text), catalogue, "default").for_resource("Appointment")[0]
    with pytest.raises(RenderError, match="'strict' PHI profile does not allow this kind"):
        render(rule, booked(), context(profile="strict"))


def test_a_site_label_meta_would_refuse_is_refused(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    labels = {"Location/synthetic-north": "North\tCampus"}
    with pytest.raises(RenderError, match="line breaks, tabs or runs of spaces"):
        render(appointment_rule(rule_sets), booked(), context(labels=labels))


def test_wrong_resource_type_is_refused(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    with pytest.raises(RenderError, match="the rule is for Appointment resources"):
        render(appointment_rule(rule_sets), fixture("synthetic__diagnosticreport-amended.json"), context())


def test_render_does_not_modify_the_resource(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    resource = booked()
    before = copy.deepcopy(resource)
    render(appointment_rule(rule_sets), resource, context())
    assert resource == before
