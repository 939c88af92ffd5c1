"""What the chat needs for health education: the approved content (:mod:`mappings.education_content`,
checked by :mod:`mappings.education_check` so that the service refuses content with an error) and the
sending policy (:class:`adapter.education.planner.EducationPolicy`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from adapter.education.planner import EducationPolicy
from mappings.education_check import check
from mappings.education_content import DEFAULT_EDUCATION_DIR, EducationContent, EducationError, Topic

if TYPE_CHECKING:
    from adapter.settings import Settings


@dataclass(frozen=True)
class Education:
    content: EducationContent
    policy: EducationPolicy = field(default_factory=EducationPolicy)

    @classmethod
    def load(cls, path: Path = DEFAULT_EDUCATION_DIR, policy: EducationPolicy | None = None,
             today: date | None = None) -> Education:
        """The content at ``path``; :class:`EducationError` when its check finds an error."""
        content = EducationContent.load(path)
        errors = [str(p) for p in check(content, today or date.today()) if p.level == "error"]
        if errors:
            raise EducationError(path, errors)
        return cls(content, policy or EducationPolicy())

    @classmethod
    def from_settings(cls, settings: Settings) -> Education:
        path = Path(settings.education_dir or DEFAULT_EDUCATION_DIR)
        return cls.load(path, EducationPolicy.from_settings(settings))

    def offered(self, today: date) -> list[Topic]:
        """The topics a patient can subscribe to today (at most ten: one list)."""
        return [t for t in self.content.topics if t.valid_on(today) and any(i.valid_on(today) for i in t.items)][:10]
