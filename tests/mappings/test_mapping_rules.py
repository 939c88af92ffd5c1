"""Loading rule files: the shipped rules load; each kind of bad file is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.errors import MappingError
from mappings.kinds import ActionToken, LinkToken, LocalDate, LocalTime, SiteLabel
from mappings.loader import load_rules
from mappings.policy import PhiProfile
from mappings.rules import RuleSet
from tests.mappings.helpers import write_rules
from whatsapp.catalogue import TemplateCatalogue

GOOD_APPOINTMENT_RULE = """
rules:
  - id: appt
    resource: Appointment
    when: {status_enters: [booked]}
    template: {default: appointment_confirmation, strict: appointment_confirmation_minimal}
    body:
      - {kind: local_date, source: "Appointment.start"}
      - {kind: local_time, source: "Appointment.start"}
      - {kind: site_label}
    buttons:
      - {kind: action_token, action: confirm}
      - {kind: action_token, action: reschedule}
      - {kind: action_token, action: cancel}
      - {kind: action_token, action: talk_to_staff}
"""


def refused(directory: Path, catalogue: TemplateCatalogue, profile: PhiProfile = "default") -> str:
    with pytest.raises(MappingError) as caught:
        load_rules(directory, catalogue, profile)
    return str(caught.value)


def test_shipped_rules_load_under_both_profiles(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    default, strict = rule_sets["default"], rule_sets["strict"]
    [appointment] = default.for_resource("Appointment")
    [report] = default.for_resource("DiagnosticReport")
    assert appointment.id == "appointment-booked-confirmation"
    assert appointment.statuses == frozenset({"booked"})
    assert appointment.template_for("default") == "appointment_confirmation"
    assert appointment.template_for("strict") == "appointment_confirmation_minimal"
    assert [type(p) for p in appointment.body_for("default")] == [LocalDate, LocalTime, SiteLabel]
    assert appointment.body_for("strict") == ()
    assert [b.action for b in appointment.buttons if isinstance(b, ActionToken)] == [
        "confirm", "reschedule", "cancel", "talk_to_staff"]
    assert report.statuses == frozenset({"final", "amended", "corrected", "appended"})
    assert report.repeat is None and report.repeat_policy("every_release") == "every_release"
    assert report.template_for("strict") == "results_ready"
    assert isinstance(report.buttons[0], LinkToken) and report.buttons[0].target == "report"
    assert appointment.languages_for("default") == ("en_US", "es")
    assert [r.id for r in strict] == [r.id for r in default]
    assert default.for_resource("Patient") == []


def test_rule_fires_only_on_entering_a_status(rule_sets: dict[PhiProfile, RuleSet]) -> None:
    rules = rule_sets["default"]
    assert [r.id for r in rules.firing("Appointment", "pending", "booked")] == ["appointment-booked-confirmation"]
    assert [r.id for r in rules.firing("Appointment", None, "booked")] == ["appointment-booked-confirmation"]
    assert rules.firing("Appointment", "booked", "booked") == []
    assert rules.firing("Appointment", "booked", "cancelled") == []
    assert [r.id for r in rules.firing("DiagnosticReport", "final", "amended")] == ["diagnostic-report-ready"]
    assert rules.firing("DiagnosticReport", "registered", "preliminary") == []


def test_a_good_custom_rule_loads(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    rules = load_rules(write_rules(tmp_path, GOOD_APPOINTMENT_RULE), catalogue, "strict")
    assert rules.get("appt") is not None


def test_unknown_field_names_file_rule_and_field(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("- {kind: site_label}", "- {kind: site_label, fallback: Location.name}")
    message = refused(write_rules(tmp_path, text, "clinic.yaml"), catalogue)
    assert "clinic.yaml, rule 'appt', body[2].fallback: unknown field 'fallback'" in message
    assert "accepts: kind" in message


def test_unknown_rule_level_field_lists_the_accepted_ones(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("    when:", "    priority: high\n    when:")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "rule 'appt', priority: unknown field 'priority'" in message
    assert "id, resource, when, repeat, template, body, buttons" in message


@pytest.mark.parametrize("expression", ["Appointment..start", "Appointment.start(", "start.nofunc()",
                                        "DiagnosticReport.issued"])
def test_bad_fhirpath_is_refused(tmp_path: Path, catalogue: TemplateCatalogue, expression: str) -> None:
    text = GOOD_APPOINTMENT_RULE.replace('{kind: local_time, source: "Appointment.start"}',
                                         f'{{kind: local_time, source: "{expression}"}}')
    message = refused(write_rules(tmp_path, text), catalogue)
    assert f"rule 'appt', body[1].source: FHIRPath {expression!r}" in message


def test_kind_not_allow_listed_is_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("- {kind: site_label}", '- {kind: patient_name, source: "Patient.name"}')
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "rule 'appt', body[2]: kind 'patient_name' is not an allow-listed body parameter kind" in message
    assert "allowed here: local_date, local_time, site_label" in message


def test_button_kind_in_the_body_is_refused_with_a_hint(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("- {kind: site_label}", "- {kind: link_token, target: report}")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "kind 'link_token' is not an allow-listed body parameter kind (link_token belongs in buttons)" in message


def test_unknown_template_is_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("default: appointment_confirmation,", "default: appointment_confirm,")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "rule 'appt', template.default: template 'appointment_confirm' is not in the template catalogue" in message
    assert "appointment_confirmation_minimal" in message  # lists what is known


def test_body_parameter_count_mismatch_is_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("      - {kind: site_label}\n", "")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert ("rule 'appt', body: template 'appointment_confirmation' (en_US, es) takes 3 body parameter(s) "
            "but the rule gives 2") in message


def test_button_layout_mismatch_is_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("{kind: action_token, action: cancel}",
                                         "{kind: link_token, target: appointment}")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "buttons[2]: template 'appointment_confirmation' (en_US, es) button 2 is a QUICK_REPLY button" in message
    text = GOOD_APPOINTMENT_RULE.replace("      - {kind: action_token, action: talk_to_staff}\n", "")
    assert "has 4 button(s) but the rule lists 3" in refused(write_rules(tmp_path, text), catalogue)


def test_strict_profile_without_alternative_is_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace(", strict: appointment_confirmation_minimal", "")
    directory = write_rules(tmp_path, text)
    assert load_rules(directory, catalogue, "default").get("appt") is not None
    message = refused(directory, catalogue, "strict")
    assert ("rule 'appt', template: the 'strict' PHI profile does not allow local_date, local_time, site_label "
            "(used at body[0], body[1], body[2]); add template.strict") in message


def test_strict_alternative_must_fit_what_strict_leaves(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("strict: appointment_confirmation_minimal", "strict: appointment_confirmation")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "takes 3 body parameter(s) but the rule gives 0 (3 left out because the 'strict' profile" in message


def test_unknown_status_and_duplicate_ids_together(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    write_rules(tmp_path, GOOD_APPOINTMENT_RULE, "a.yaml")
    text = GOOD_APPOINTMENT_RULE.replace("[booked]", "[bookd]")
    with pytest.raises(MappingError) as caught:
        load_rules(write_rules(tmp_path, text, "b.yaml"), catalogue, "default")
    problems = [str(p) for p in caught.value.problems]
    assert "b.yaml, rule 'appt', id: the id is already used by a rule in a.yaml" in problems
    assert any(p.startswith("b.yaml, rule 'appt', when.status_enters[0]: 'bookd' is not an R4 Appointment status")
               for p in problems)


def test_rule_without_id_is_located_by_index(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    text = GOOD_APPOINTMENT_RULE.replace("  - id: appt\n", "  -\n")
    message = refused(write_rules(tmp_path, text), catalogue)
    assert "rules.yaml, rules[0].id: this required field is missing" in message


@pytest.mark.parametrize(("content", "expected"), [
    ("rules: [\n", "rules.yaml: is not valid YAML at line"),
    ("- just a list\n", "must be a mapping with a non-empty top-level `rules:` list"),
    ("rules: []\n", "must be a mapping with a non-empty top-level `rules:` list"),
])
def test_malformed_files_are_refused(tmp_path: Path, catalogue: TemplateCatalogue, content: str, expected: str) -> None:
    assert expected in refused(write_rules(tmp_path, content), catalogue)


def test_missing_or_empty_folder_is_refused(tmp_path: Path, catalogue: TemplateCatalogue) -> None:
    assert "does not exist" in refused(tmp_path / "nowhere", catalogue)
    assert "holds no rule files" in refused(tmp_path, catalogue)
