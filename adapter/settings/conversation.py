"""Settings of the conversation and what follows it: the keyword and reply file, how a Confirm tap is
written back to the EHR, rescheduling, the hand-off to the front desk and its opening hours, and the
reminder timing (quiet hours, :mod:`mappings.quiet_hours`; reminders after a confirmation; a daily cap)
and the satisfaction survey; the front desk's approved answers and departments (:mod:`mappings.knowledge`),
refused at start-up when ``bridge knowledge check`` finds an error in them."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from adapter.settings.values import PACKAGE_ROOT, WebUrl
from mappings.approved import refusals
from mappings.knowledge import DEFAULT_KNOWLEDGE_FILE, KnowledgeBase
from mappings.knowledge_check import check as check_knowledge
from mappings.quiet_hours import QuietHours

DEFAULT_CONVERSATION_FILE = PACKAGE_ROOT / "mappings" / "conversation.yaml"


class ConversationSettings(BaseModel):
    # --- conversations and write-back
    conversation_file: Path = Field(
        DEFAULT_CONVERSATION_FILE, description="Keywords (STOP, staff, emergency words) and reply texts per language."
    )
    knowledge_file: Path = Field(
        DEFAULT_KNOWLEDGE_FILE, description="The hospital's approved answers and its departments (hours, time zone, "
        "the FHIR owner of their hand-off Tasks), per language; check it with `bridge knowledge check`."
    )
    answer_confident_score: float = Field(
        88.0, ge=50, le=100, description="Match score (0-100) from which an approved answer is sent at once, when the "
        "next entry scores at least answer_margin less."
    )
    answer_weak_score: float = Field(
        65.0, ge=0, le=100, description="Match score from which entries are offered as a list (the best three); below "
        "it the patient gets the menu and a person."
    )
    answer_margin: float = Field(
        8.0, ge=0, le=50, description="How far ahead of the next entry a confident match must be."
    )
    confirm_mode: Literal["participant", "appointment_response"] = Field(
        "participant", description="How a Confirm tap is written: the patient participant's status, or an "
        "AppointmentResponse (EHRs differ)."
    )
    reschedule_window_days: int = Field(14, ge=1, le=180, description="How far ahead free slots are offered.")
    free_slot_on_cancel: bool = Field(
        True, description="Set the Slot free when a patient cancels (for EHRs that expect the client to)."
    )
    handoff_timeout_hours: float = Field(
        24.0, gt=0, le=24 * 14, description="How long the bot stays silent after a hand-off if the Task stays open."
    )
    staff_hours: str = Field(
        "08:00-17:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$",
        description="Front-desk opening hours in the site's time zone (HH:MM-HH:MM), told to patients.",
    )
    staff_workdays: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], description="Front-desk working days, 0 = Monday … 6 = Sunday."
    )
    staff_inbox_url: WebUrl | None = Field(
        None, description="Optional URL that gets a POST (ids only) for each hand-off, e.g. a staff inbox."
    )
    # --- Reminders and survey
    quiet_hours: str | None = Field(
        "21:00-08:00", description="Local hours (site_timezone) when no reminder starts, `HH:MM-HH:MM`; a reminder "
        "due then goes out earlier, at the start of the quiet hours. Empty: no quiet hours.",
    )
    remind_after_confirm: bool = Field(
        False, description="Keep sending reminders after the patient confirmed the appointment."
    )
    reminder_daily_cap: int = Field(
        2, ge=1, le=10, description="Most reminder messages one patient gets on one local day; the rest are skipped "
        "and listed as skips.",
    )
    survey_enabled: bool = Field(
        True, description="Ask a 1-5 satisfaction question once after an appointment is fulfilled, and write the "
        "answer to the EHR as a QuestionnaireResponse.",
    )

    @field_validator("staff_workdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(day not in range(7) for day in value):
            raise ValueError("must list days 0 (Monday) to 6 (Sunday), e.g. [0, 1, 2, 3, 4]")
        return sorted(set(value))

    @field_validator("knowledge_file")
    @classmethod
    def _knowledge(cls, value: Path) -> Path:
        if errors := refusals(value, KnowledgeBase.load, check_knowledge, date.today()):
            raise ValueError(f"{value} (run `bridge knowledge check`): " + "; ".join(errors))
        return value

    @model_validator(mode="after")
    def _answer_scores(self) -> ConversationSettings:
        if self.answer_weak_score >= self.answer_confident_score:
            raise ValueError(f"answer_weak_score ({self.answer_weak_score:g}) must be below answer_confident_score "
                             f"({self.answer_confident_score:g})")
        return self

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        QuietHours.parse(value)  # its QuietHoursError (a ValueError) says what a valid value looks like
        return value.strip()

    def staff_times(self) -> tuple[time, time]:
        opens, closes = self.staff_hours.split("-")
        return time.fromisoformat(opens), time.fromisoformat(closes)
