"""What a write-back of a patient's tap answers: a :class:`WriteOutcome` of one :data:`OutcomeKind`,
with the free :class:`SlotOption`s a reschedule offers; and :class:`HandoffNeeded`, the signal that
a write must be finished by a person (a front-desk Task).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

OutcomeKind = Literal["confirmed", "cancelled", "rescheduled", "already", "stale", "not_allowed", "slots",
                      "no_slots", "handoff"]


@dataclass(frozen=True)
class SlotOption:
    slot_ref: str
    start: datetime  # timezone-aware
    end: datetime


@dataclass(frozen=True)
class WriteOutcome:
    kind: OutcomeKind
    appointment: dict[str, Any] | None  # the appointment as it is now (after the write, or as read)
    task_ref: str | None = None  # "Task/…" when a hand-off Task was created
    slots: tuple[SlotOption, ...] = ()
    detail: str = ""  # ids/codes/classes only, never PHI


class HandoffNeeded(Exception):
    """A write that a person must finish: carries the PHI-free reason suffix."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
