"""The errors of the mapping layer, one tree so the decide step can catch by intent.

::

    MappingsError                  anything this package raises on purpose
    ├── MappingError               start-up: a rule file is wrong (``problems`` lists each one)
    └── ContentError               per resource: no message may be built from it
        ├── RenderError            a parameter has no value we may send (missing, date-only, …)
        └── PhiLeakError           the guard found an identifying string in the outgoing payload

A :class:`ContentError` is permanent for that resource version: retrying gives the same answer,
so the pipeline turns it into a visible dead letter (DESIGN.md, "Nothing is dropped silently").

No error here ever carries a PHI value: messages name the rule, the parameter, the field path and
the *kind* of problem, never the FHIR string that caused it (DESIGN.md, "No PHI in logs").
"""

from __future__ import annotations

from dataclasses import dataclass


class MappingsError(Exception):
    """Base class of every error raised on purpose by :mod:`mappings`."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rule file, located precisely enough to fix without guessing."""

    file: str
    message: str
    rule_id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.rule_id is not None:
            where.append(f"rule {self.rule_id!r}")
        if self.field:
            where.append(self.field)
        return f"{', '.join(where)}: {self.message}"


class MappingError(MappingsError):
    """The mapping rules cannot be loaded; ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n  - ".join(str(problem) for problem in self.problems)
        super().__init__(f"The mapping rules cannot be loaded; fix these problems:\n  - {lines}")


class ContentError(MappingsError):
    """No message may be built for this resource; permanent for this resource version."""


class RenderError(ContentError):
    """A parameter could not be given a value that is safe and certain.

    ``where`` is the template position (``body[0]``, ``button[2]``); ``kind`` the parameter kind;
    ``reason`` says what was wrong in words that never repeat the FHIR value.
    """

    def __init__(self, rule_id: str, where: str, kind: str, reason: str) -> None:
        self.rule_id = rule_id
        self.where = where
        self.kind = kind
        self.reason = reason
        super().__init__(f"rule {rule_id!r}, {where} ({kind}): {reason}")


class PhiLeakError(ContentError):
    """An outgoing string contains an identifying string of the resource or patient.

    ``field_path`` locates the outgoing value (``components[0].parameters[1].text``); ``category`` is
    the kind of identifying string matched (``name``, ``identifier``, ``birth_date``, ``telecom``, …).
    The matched value itself is deliberately not kept anywhere on the error.
    """

    def __init__(self, field_path: str, category: str) -> None:
        self.field_path = field_path
        self.category = category
        super().__init__(f"identifying data ({category}) found in outgoing field {field_path}; message blocked")
