"""The shape of a rule file (``mappings/rules/*.yaml``), as pydantic models that refuse unknown fields.

Only the *shape* is checked here; what needs outside knowledge (FHIR status codes, FHIRPath,
the template catalogue, the PHI profile) is checked in :mod:`mappings.loader`. The format is
documented for integration engineers in ``mappings/README.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mappings import kinds
from mappings.kinds import BodyParam, ButtonParam

ResourceType = Literal["Appointment", "DiagnosticReport", "DocumentReference", "Invoice"]
# Notices an operator sends (adapter.scheduling.site_notices) rather than an EHR status change.
OperatorNotice = Literal["site-closed", "site-moved"]
Repeat = Literal["once", "every_release"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WhenSpec(_Strict):
    """When the rule fires: a change of the resource's status *into* one of these codes, or (exactly one of
    the two) an operator's notice about the resources it selects (``bridge notices site-closure``)."""

    status_enters: list[str] = Field(default_factory=list)
    operator_notice: OperatorNotice | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> WhenSpec:
        if bool(self.status_enters) == (self.operator_notice is not None):
            raise ValueError("give exactly one of status_enters (a non-empty list) or operator_notice")
        return self


class TemplateSpec(_Strict):
    """The template per PHI profile; ``strict`` is the alternative for the ``strict`` profile."""

    default: str = Field(min_length=1)
    strict: str | None = Field(None, min_length=1)


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    resource: ResourceType
    when: WhenSpec
    repeat: Repeat | None = None
    template: TemplateSpec
    body: list[BodyParam] = Field(default_factory=list)
    buttons: list[ButtonParam] = Field(default_factory=list)
    # Reminders before an Appointment's start (adapter.scheduling.reminders): offsets like "2d", "2h", "30m", sent
    # with ``reminder_template`` (same body as the rule, no buttons).
    reminders: list[str] = Field(default_factory=list, max_length=5)
    reminder_template: TemplateSpec | None = None


class RuleFile(_Strict):
    rules: list[RuleSpec] = Field(min_length=1)


# Which fields each part of the file accepts, for "unknown field" messages.
FIELDS_BY_PART: dict[str, tuple[str, ...]] = {
    "file": tuple(RuleFile.model_fields),
    "rule": tuple(RuleSpec.model_fields),
    "when": tuple(WhenSpec.model_fields),
    "template": tuple(TemplateSpec.model_fields),
}


def fields_of_kind(kind: str) -> tuple[str, ...]:
    """The fields a parameter of ``kind`` accepts (empty for an unknown kind)."""
    for model in (kinds.LocalDate, kinds.LocalTime, kinds.SiteLabel, kinds.NewSiteLabel, kinds.LinkToken,
                  kinds.ActionToken):
        annotation: Any = model.model_fields["kind"].annotation
        if kind in getattr(annotation, "__args__", ()):
            return tuple(model.model_fields)
    return ()
