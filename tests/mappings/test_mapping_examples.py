"""Every Appointment and DiagnosticReport in the public examples and our fixtures, through every rule.

For each resource and each rule for its type, in both profiles and both languages: render with a
realistic token minter, check that the PHI guard passes, and check independently that no
identifying string of the resource, its patient or what it references is in the output. Then
inject identifying strings of each category and check the guard catches every one.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from mappings.errors import PhiLeakError, RenderError
from mappings.phi_guard import MIN_LENGTH, MIN_NUMERIC_DIGITS, check, identifying_strings, normalise
from mappings.policy import PhiProfile
from mappings.render import render
from mappings.rules import RuleSet
from tests.mappings.helpers import context
from tests.mappings.mapping_corpus import Case, FakeMinter, load_cases
from tests.support.examples import EXAMPLES_DIR, json_files

CASES = load_cases()  # raises when there are none, so the parametrised tests below cannot collect nothing


def test_the_examples_are_all_here_and_each_has_its_source() -> None:
    listed = set(re.findall(r"^\| `([^`]+\.json)` \|", (EXAMPLES_DIR / "SOURCES.md").read_text(encoding="utf-8"),
                            re.MULTILINE))
    assert {path.name for path in json_files(EXAMPLES_DIR)} == listed
    assert len(listed) == 55
    assert len(CASES) == 91  # 87 in the examples, 4 in the synthetic fixtures


def test_the_corpus_covers_what_the_rules_handle() -> None:
    statuses = {(c.resource["resourceType"], c.resource.get("status")) for c in CASES}
    for needed in [("Appointment", "booked"), ("Appointment", "pending"), ("Appointment", "cancelled"),
                   ("Appointment", "proposed"), ("DiagnosticReport", "final"), ("DiagnosticReport", "amended"),
                   ("DiagnosticReport", "preliminary")]:
        assert needed in statuses
    assert sum(1 for c in CASES if c.patient is not None) >= 60


def outgoing(template: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) of every value a template object sends: body texts, payloads and URL suffixes."""
    values = []
    for component in template["components"]:
        for parameter in component["parameters"]:
            kind = "text" if component["type"] == "body" else "token"
            values.append((kind, parameter.get("text") or parameter.get("payload")))
    return values


def meaningful(candidate: str) -> bool:
    letters = any(char.isalpha() for char in candidate)
    return len(candidate) >= MIN_LENGTH and (letters or sum(c.isdigit() for c in candidate) >= MIN_NUMERIC_DIGITS)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.label)
@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize("language", ["en_US", "es"])
def test_rendered_output_carries_nothing_identifying(
    rule_sets: dict[PhiProfile, RuleSet], case: Case, profile: PhiProfile, language: str
) -> None:
    resource = case.resource
    rules = rule_sets[profile].for_resource(resource["resourceType"])
    assert rules, "every Appointment and DiagnosticReport has at least one rule"
    identifying = identifying_strings(resource, case.patient, case.related)
    for rule in rules:
        minter = FakeMinter(f"{resource['resourceType']}/{resource.get('id')}")
        ctx = context(language=language, profile=profile, minter=minter)
        if any(p.kind in ("local_date", "local_time") for p in rule.body_for(profile)) and "start" not in resource:
            with pytest.raises(RenderError, match="selected nothing"):
                render(rule, resource, ctx)
            continue
        template = render(rule, resource, ctx)
        check(template, identifying, public=ctx.public_labels)
        # An independent, stricter look: plain substring for texts, word-bounded for random tokens.
        for kind, value in outgoing(template):
            if value in ctx.public_labels:
                continue  # the hospital's own configured words, e.g. "South Wing" beside a "Wing" code
            text = normalise(value)
            for candidate in filter(meaningful, identifying):
                if kind == "text":
                    assert candidate not in text, f"{identifying.category_of(candidate)} in {rule.id}"
                else:
                    assert not re.search(rf"(?<![a-z0-9]){re.escape(candidate)}(?![a-z0-9])", text)
        assert {value for kind, value in outgoing(template) if kind == "token"} <= set(minter.minted)


def injectable(case: Case) -> dict[str, str]:
    """One identifying string per category, long and unambiguous enough that missing it is a bug."""
    identifying = identifying_strings(case.resource, case.patient, case.related)
    chosen: dict[str, str] = {}
    for candidate in sorted(identifying, key=lambda s: (-len(s), s)):
        category = identifying.category_of(candidate)
        if category not in chosen and len(candidate) >= 8 and len(candidate) <= 80 \
                and any(char.isalpha() for char in candidate):
            chosen[category] = candidate
    return chosen


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.label)
def test_the_guard_catches_an_injected_leak(rule_sets: dict[PhiProfile, RuleSet], case: Case) -> None:
    resource = case.resource
    rule = rule_sets["default"].for_resource(resource["resourceType"])[0]
    ctx = context(profile="default", minter=FakeMinter("inject"))
    if "start" not in resource and resource["resourceType"] == "Appointment":
        resource = {**resource, "start": "2026-12-01T15:30:00Z"}  # render needs a moment; the leak is what we test
    identifying = identifying_strings(case.resource, case.patient, case.related)
    template = render(rule, resource, ctx)
    check(template, identifying, public=ctx.public_labels)
    leaks = injectable(case)
    assert leaks, "every resource has something identifying"
    if case.patient is not None:
        assert "name" in leaks or "identifier" in leaks
    first = template["components"][0]["parameters"][0]
    field = "text" if "text" in first else "payload"
    for category, leak in leaks.items():
        original = first[field]
        first[field] = f"{original} {leak.upper()}"
        try:
            with pytest.raises(PhiLeakError) as caught:
                check(template, identifying, public=ctx.public_labels)
        finally:
            first[field] = original
        assert caught.value.field_path == f"components[0].parameters[0].{field}"
        assert caught.value.category == category
        assert leak not in normalise(str(caught.value))
