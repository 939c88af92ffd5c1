"""Content a hospital approves and the service sends verbatim (the front desk's answers, health-education
series): the error that refuses a file, and the rule that the service does not start on content whose
check finds an error (HHS minimum necessary: nothing unreviewed reaches a patient)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Protocol, TypeVar

Content = TypeVar("Content")


class ContentError(ValueError):
    """The content cannot be used; ``problems`` lists each reason, saying where."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path, self.problems = str(path), problems
        super().__init__(f"{path}: " + "; ".join(problems))


class Approved:
    """An approved piece of content (an answer, a topic, a series item): served only up to its
    ``valid_until``, and recorded by id and version when sent."""

    id: str
    version: int
    valid_until: date

    def valid_on(self, day: date) -> bool:
        return day <= self.valid_until

    @property
    def key(self) -> str:
        """What is recorded with the content sent: its id and version."""
        return f"{self.id}@{self.version}"


class Finding(Protocol):
    @property
    def level(self) -> str: ...


def refusals(path: Path, load: Callable[[Path], Content],
             check: Callable[[Content, date], Sequence[Finding]], today: date) -> list[str]:
    """Why the service refuses the content at ``path`` (it cannot be read, or its check finds an error);
    empty when it may be used."""
    try:
        content = load(path)
    except ContentError as error:
        return error.problems
    return [str(finding) for finding in check(content, today) if finding.level == "error"]
