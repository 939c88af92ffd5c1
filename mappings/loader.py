"""Loading the rule files at start-up, and checking them against everything known before the first event.

:func:`load_rules` reads every file in ``mappings/rules/`` (format in ``mappings/README.md``) and checks it
against the file shape (:mod:`mappings.schema`), R4 status codes, FHIRPath syntax, the template catalogue
(names, body parameter counts, button layout) and the PHI profile (:mod:`mappings.policy`). Every problem in
every file is reported at once in a :class:`~mappings.errors.MappingError`; only a clean folder becomes a
:class:`~mappings.rules.RuleSet`.

Status value sets: https://hl7.org/fhir/R4/valueset-appointmentstatus.html,
https://hl7.org/fhir/R4/valueset-diagnostic-report-status.html,
https://hl7.org/fhir/R4/valueset-document-reference-status.html and
https://hl7.org/fhir/R4/valueset-invoice-status.html.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import yaml
from pydantic import ValidationError

from mappings import policy
from mappings.errors import MappingError, Problem
from mappings.fhirpath import FhirPathProblem, check_expression
from mappings.kinds import BodyParam
from mappings.policy import PhiProfile
from mappings.rule_errors import describe_validation_error
from mappings.rules import Rule, RuleSet, effective_body
from mappings.schema import FIELDS_BY_PART, RuleSpec
from whatsapp.catalogue import Template, TemplateCatalogue

STATUSES: Mapping[str, frozenset[str]] = {
    "Appointment": frozenset({"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled",
                              "noshow", "entered-in-error", "checked-in", "waitlist"}),
    "DiagnosticReport": frozenset({"registered", "partial", "preliminary", "final", "amended", "corrected",
                                   "appended", "cancelled", "entered-in-error", "unknown"}),
    "DocumentReference": frozenset({"current", "superseded", "entered-in-error"}),
    "Invoice": frozenset({"draft", "issued", "balanced", "cancelled", "entered-in-error"}),
}


def load_rules(directory: Path, catalogue: TemplateCatalogue, profile: PhiProfile) -> RuleSet:
    """Loads every ``*.yaml``/``*.yml`` file in ``directory``; raises :class:`MappingError` listing
    every problem (unknown field, bad FHIRPath, kind not allow-listed, template missing or shaped
    differently, kind refused by ``profile`` without an alternative)."""
    if not directory.is_dir():
        raise MappingError([Problem(str(directory), "the mappings folder does not exist (setting mappings_dir)")])
    files = sorted(path for path in directory.iterdir() if path.suffix in (".yaml", ".yml") and path.is_file())
    if not files:
        raise MappingError([Problem(str(directory), "holds no rule files (*.yaml); no message could ever be sent")])
    problems: list[Problem] = []
    loaded: list[tuple[str, RuleSpec]] = []
    for path in files:
        specs, file_problems = _read_file(path)
        problems.extend(file_problems)
        loaded.extend((path.name, spec) for spec in specs)
    first_file: dict[str, str] = {}
    for file, spec in loaded:
        if spec.id in first_file:
            problems.append(Problem(file, f"the id is already used by a rule in {first_file[spec.id]}", spec.id, "id"))
        first_file.setdefault(spec.id, file)
        problems.extend(_check_rule(file, spec, catalogue, profile))
        problems.extend(_check_reminders(file, spec, catalogue, profile))
    if problems:
        raise MappingError(problems)
    return RuleSet((_build(file, spec, catalogue) for file, spec in loaded), profile)


def _read_file(path: Path) -> tuple[list[RuleSpec], list[Problem]]:
    name = path.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return [], [Problem(name, f"is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}")]
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(name, f"cannot be read: {exc}")]
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list) or not raw["rules"]:
        return [], [Problem(name, "must be a mapping with a non-empty top-level `rules:` list")]
    problems = [
        Problem(name, f"unknown field {key!r}; the top level accepts only: {', '.join(FIELDS_BY_PART['file'])}")
        for key in raw if key != "rules"
    ]
    specs: list[RuleSpec] = []
    for index, raw_rule in enumerate(raw["rules"]):
        try:
            specs.append(RuleSpec.model_validate(raw_rule))
        except ValidationError as exc:
            rule_id = raw_rule.get("id") if isinstance(raw_rule, dict) else None
            for error in exc.errors(include_url=False, include_input=False):
                field, message = describe_validation_error(dict(error))
                if isinstance(rule_id, str):
                    problems.append(Problem(name, message, rule_id, field))
                else:
                    problems.append(Problem(name, message, None, f"rules[{index}]" + (f".{field}" if field else "")))
    return specs, problems


def _check_rule(file: str, spec: RuleSpec, catalogue: TemplateCatalogue, profile: PhiProfile) -> list[Problem]:
    problems: list[Problem] = []

    def problem(field: str, message: str) -> None:
        problems.append(Problem(file, message, spec.id, field))

    problems.extend(_check_operator_notice(file, spec))
    valid = STATUSES[spec.resource]
    for index, status in enumerate(spec.when.status_enters):
        if status not in valid:
            problem(f"when.status_enters[{index}]",
                    f"{status!r} is not an R4 {spec.resource} status; use one of: {', '.join(sorted(valid))}")
    for index, param in enumerate(spec.body):
        source = getattr(param, "source", None)
        if source is not None:
            try:
                check_expression(source, spec.resource)
            except FhirPathProblem as exc:
                problem(f"body[{index}].source", f"FHIRPath {source!r} {exc}")
    variants = _variants(spec)
    for variant, name in variants.items():
        if not catalogue.languages(name):
            problem(f"template.{variant}",
                    f"template {name!r} is not in the template catalogue (known: {', '.join(catalogue.names())})")
            continue
        body = effective_body(spec.body, variant, has_own_template=True)
        mismatches: dict[tuple[str, str], list[str]] = {}
        for language in catalogue.languages(name):
            template = catalogue.get(name, language)
            assert template is not None  # listed by the catalogue itself
            for field, message in _shape_mismatches(template, spec, body, variant):
                mismatches.setdefault((field, message), []).append(language)
        for (field, message), languages in mismatches.items():
            problem(field, f"template {name!r} ({', '.join(languages)}) {message}")
    sent = effective_body(spec.body, profile, has_own_template=profile in variants)
    used: list[tuple[str, str]] = [(f"body[{i}]", p.kind) for i, p in enumerate(sent)]
    used += [(f"buttons[{i}]", b.kind) for i, b in enumerate(spec.buttons)]
    refused = [(where, kind) for where, kind in used if not policy.is_allowed(kind, profile)]
    if refused:
        kinds = ", ".join(policy.disallowed((kind for _, kind in refused), profile))
        wheres = ", ".join(where for where, _ in refused)
        hint = (f"add template.{profile} naming a template without those parameters"
                if profile not in variants else "that profile's template cannot use them either")
        problem("template", f"the {profile!r} PHI profile does not allow {kinds} (used at {wheres}); {hint}")
    return problems


def _check_operator_notice(file: str, spec: RuleSpec) -> list[Problem]:
    """An operator's notice is about the Appointments it selects; only a "moved" notice names a new site."""
    problems: list[Problem] = []
    notice = spec.when.operator_notice
    if notice is not None and spec.resource != "Appointment":
        problems.append(Problem(file, "an operator_notice rule is about Appointments; set resource: Appointment",
                                spec.id, "resource"))
    for index, param in enumerate(spec.body):
        if param.kind == "new_site_label" and notice != "site-moved":
            problems.append(Problem(file, "new_site_label is only known to a rule with operator_notice: site-moved",
                                    spec.id, f"body[{index}]"))
    return problems


def _shape_mismatches(template: Template, spec: RuleSpec, body: tuple[BodyParam, ...],
                      variant: PhiProfile) -> Iterator[tuple[str, str]]:
    if template.parameter_format != "POSITIONAL":
        yield f"template.{variant}", "uses NAMED parameters; rules fill POSITIONAL templates only"
    if template.header_parameters:
        yield f"template.{variant}", "has header parameters, which rules cannot fill"
    if template.body_parameter_count != len(body):
        left_out = len(spec.body) - len(body)
        note = f" ({left_out} left out because the {variant!r} profile does not allow them)" if left_out else ""
        yield "body", f"takes {template.body_parameter_count} body parameter(s) but the rule gives {len(body)}{note}"
    if len(template.buttons) != len(spec.buttons):
        yield "buttons", (f"has {len(template.buttons)} button(s) but the rule lists {len(spec.buttons)}; "
                          "list one entry per template button, in the template's order")
        return
    for index, (shape, param) in enumerate(zip(template.buttons, spec.buttons, strict=True)):
        expected = "action_token" if shape.type == "QUICK_REPLY" else "link_token" if shape.is_dynamic_url else None
        if expected is None:
            yield f"buttons[{index}]", (f"button {index} is a {shape.type} button without a parameter; "
                                        "rules cannot fill it")
        elif param.kind != expected:
            yield f"buttons[{index}]", (f"button {index} is a {shape.type} button, so it needs kind {expected}, "
                                        f"not {param.kind}")


def _variants(spec: RuleSpec) -> dict[PhiProfile, str]:
    variants: dict[PhiProfile, str] = {"default": spec.template.default}
    if spec.template.strict is not None:
        variants["strict"] = spec.template.strict
    return variants


def _build(file: str, spec: RuleSpec, catalogue: TemplateCatalogue) -> Rule:
    templates = _variants(spec)
    languages: dict[PhiProfile, tuple[str, ...]] = {
        profile: tuple(catalogue.languages(templates.get(profile, templates["default"])))
        for profile in policy.PROFILES
    }
    rule = Rule(
        id=spec.id, resource_type=spec.resource, statuses=frozenset(spec.when.status_enters),
        repeat=spec.repeat, templates=templates, body=tuple(spec.body), buttons=tuple(spec.buttons),
        languages=languages, source_file=file, operator_notice=spec.when.operator_notice,
    )
    if not spec.reminders or spec.reminder_template is None:
        return rule
    reminder = _build(file, _reminder_spec(spec), catalogue)
    return replace(rule, reminder_offsets=tuple(parse_offset(text) for text in spec.reminders), reminder=reminder)


_OFFSET = re.compile(r"^([1-9][0-9]{0,3})([dhm])$")


def parse_offset(text: str) -> timedelta:
    """``2d``, ``2h``, ``30m`` as a :class:`timedelta`; raises ValueError for anything else."""
    match = _OFFSET.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a reminder offset; write a number and d, h or m, e.g. 2d, 2h or 30m")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(days=amount) if unit == "d" else timedelta(hours=amount) if unit == "h" else timedelta(
        minutes=amount)


def _reminder_spec(spec: RuleSpec) -> RuleSpec:
    """The reminder as a rule of its own (not validated again): same body, its template, no buttons."""
    return spec.model_copy(update={"id": f"{spec.id}-reminder", "template": spec.reminder_template, "buttons": [],
                                   "reminders": [], "reminder_template": None})


def _check_reminders(file: str, spec: RuleSpec, catalogue: TemplateCatalogue, profile: PhiProfile) -> list[Problem]:
    if not spec.reminders and spec.reminder_template is None:
        return []
    problems: list[Problem] = []
    if spec.resource != "Appointment":
        problems.append(Problem(file, "reminders are only for Appointment rules", spec.id, "reminders"))
    if not spec.reminders or spec.reminder_template is None:
        problems.append(Problem(file, "reminders need both `reminders:` (offsets) and `reminder_template:`",
                                spec.id, "reminders"))
        return problems
    for index, text in enumerate(spec.reminders):
        try:
            parse_offset(text)
        except ValueError as error:
            problems.append(Problem(file, str(error), spec.id, f"reminders[{index}]"))
    return problems + _check_rule(file, _reminder_spec(spec), catalogue, profile)
