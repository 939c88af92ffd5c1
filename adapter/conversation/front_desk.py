"""The front desk's configuration, as the conversation uses it: the approved answers and departments
(:mod:`mappings.knowledge`), the matcher (:mod:`mappings.knowledge_match`), the score thresholds and
the public site labels shown with "my appointments".

:meth:`FrontDesk.decide` turns a question into what the bot does, deterministically:

- ``answer`` — the best entry scores at least ``confident`` and leads the next by ``margin``: its
  approved text is sent verbatim;
- ``choices`` — the best scores at least ``weak``: the (up to) three best entries at or above
  ``weak`` are offered as a list;
- ``none`` — the menu and a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mappings.knowledge import DEFAULT_KNOWLEDGE_FILE, KnowledgeBase
from mappings.knowledge_match import Candidate, Matcher

if TYPE_CHECKING:
    from adapter.settings import Settings

CHOICES = 3
# Fixed row ids of the menu and its lists: they carry no PHI and no authority (what they open is the
# same for anyone); what acts on a patient's record is an opaque action token.
ROW_APPOINTMENTS, ROW_QUESTIONS, ROW_DEPARTMENTS = "menu:appointments", "menu:questions", "menu:departments"
ROW_TIPS = "menu:tips"  # health-education topics (adapter.conversation.tips)
ANSWER_ROW, DEPARTMENT_ROW, TIPS_ROW = "answer:", "department:", "tips:"
FIXED_ROWS = ("menu:", ANSWER_ROW, DEPARTMENT_ROW, TIPS_ROW)


@dataclass(frozen=True)
class Decision:
    kind: Literal["answer", "choices", "none"]
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class FrontDesk:
    base: KnowledgeBase
    confident: float = 88.0
    weak: float = 65.0
    margin: float = 8.0
    site_labels: Mapping[str, str] = field(default_factory=dict)
    default_site_label: str | None = None  # None: the conversation file's "site_default" text

    @cached_property
    def matcher(self) -> Matcher:
        return Matcher(self.base)

    @classmethod
    def load(cls, path: Path = DEFAULT_KNOWLEDGE_FILE, **options: Any) -> FrontDesk:
        return cls(KnowledgeBase.load(path), **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> FrontDesk:
        """From the service's settings (checked when they were loaded: a bad file stops the start)."""
        return cls.load(settings.knowledge_file, confident=settings.answer_confident_score,
                        weak=settings.answer_weak_score, margin=settings.answer_margin,
                        site_labels=dict(settings.site_labels), default_site_label=settings.site_label_default)

    def decide(self, question: str, today: date, prefer: str | None) -> Decision:
        ranked = self.matcher.rank(question, today, prefer=prefer, limit=CHOICES)
        if not ranked or ranked[0].score < self.weak:
            return Decision("none")
        runner_up = ranked[1].score if len(ranked) > 1 else 0.0
        if ranked[0].score >= self.confident and ranked[0].score - runner_up >= self.margin:
            return Decision("answer", (ranked[0],))
        return Decision("choices", tuple(c for c in ranked if c.score >= self.weak))
