"""Mapping rules as the service uses them: which FHIR change becomes which template, with which parameters.

A :class:`Rule` is one rule from a file in ``mappings/rules/`` (format in ``mappings/README.md``), already
checked at start-up by :func:`mappings.loader.load_rules`; a :class:`RuleSet` finds the rules a status change
fires. Under a PHI profile with its own template, a rule sends only the body parameters that profile allows
(:mod:`mappings.policy`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

from mappings import policy
from mappings.kinds import BodyParam, ButtonParam
from mappings.policy import PhiProfile
from mappings.schema import Repeat


@dataclass(frozen=True, eq=False)
class Rule:
    """One loaded, checked rule. ``templates`` maps a profile to its template name (``default`` always
    present); ``languages`` maps every profile to the catalogue languages of the template it uses."""

    id: str
    resource_type: str
    statuses: frozenset[str]
    repeat: Repeat | None
    templates: Mapping[PhiProfile, str]
    body: tuple[BodyParam, ...]
    buttons: tuple[ButtonParam, ...]
    languages: Mapping[PhiProfile, tuple[str, ...]]
    source_file: str
    # Reminders before the appointment's start (adapter.scheduling.reminders); ``reminder`` renders them.
    reminder_offsets: tuple[timedelta, ...] = ()
    reminder: Rule | None = None
    # Set for a rule an operator's notice fires (``when.operator_notice``); such a rule has no statuses.
    operator_notice: str | None = None

    def template_for(self, profile: PhiProfile) -> str:
        """The template sent under ``profile``: its own alternative if the rule has one, else the default."""
        return self.templates.get(profile, self.templates["default"])

    def body_for(self, profile: PhiProfile) -> tuple[BodyParam, ...]:
        """The body parameters sent under ``profile`` (see :func:`effective_body`)."""
        return effective_body(self.body, profile, has_own_template=profile in self.templates)

    def languages_for(self, profile: PhiProfile) -> tuple[str, ...]:
        """Languages the template for ``profile`` is approved in; pass these to ``preferred_language``."""
        return self.languages[profile]

    def fires_on(self, previous_status: str | None, status: str | None) -> bool:
        """True when the status *enters* one of the rule's statuses (``None`` = the resource is new)."""
        return status in self.statuses and previous_status != status

    def repeat_policy(self, report_policy: Repeat) -> Repeat:
        """``repeat`` from the rule, or the service's ``report_policy`` when the rule leaves it null."""
        return self.repeat or report_policy


class RuleSet:
    """The loaded rules, in file order (files sorted by name), looked up by resource type."""

    def __init__(self, rules: Iterable[Rule], profile: PhiProfile) -> None:
        self.profile = profile
        self._rules = tuple(rules)
        self._by_resource: dict[str, list[Rule]] = {}
        for rule in self._rules:
            if rule.operator_notice is None:  # an operator's notice is looked up by operator(), not by changes
                self._by_resource.setdefault(rule.resource_type, []).append(rule)

    def for_resource(self, resource_type: str) -> list[Rule]:
        """The rules a change of a ``resource_type`` may fire (not operator notices), in order."""
        return list(self._by_resource.get(resource_type, ()))

    def firing(self, resource_type: str, previous_status: str | None, status: str | None) -> list[Rule]:
        """The rules a status change of a ``resource_type`` fires, in order."""
        return [rule for rule in self.for_resource(resource_type) if rule.fires_on(previous_status, status)]

    def operator(self, notice: str) -> Rule | None:
        """The rule an operator's ``notice`` (``site-closed``, ``site-moved``) sends, if the files have one."""
        return next((rule for rule in self._rules if rule.operator_notice == notice), None)

    def resource_types(self) -> frozenset[str]:
        """The resource types whose status changes fire a rule: the EHR feeds the service needs."""
        return frozenset(self._by_resource)

    def get(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self._rules if rule.id == rule_id), None)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)


def effective_body(body: Iterable[BodyParam], profile: PhiProfile, *, has_own_template: bool) -> tuple[BodyParam, ...]:
    """Under a profile with its own template, the body keeps only the kinds that profile allows (so a
    ``strict`` alternative takes what is left, usually nothing); otherwise the whole body is sent."""
    if not has_own_template:
        return tuple(body)
    return tuple(param for param in body if policy.is_allowed(param.kind, profile))
