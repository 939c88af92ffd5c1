"""Settings of health education (:mod:`adapter.education`): the approved topics and series
(:mod:`mappings.education_content`, refused at start-up when ``bridge education check`` finds an error in
them) and the weekly cap on education messages per patient. Quiet hours and the time zone are the
reminders' (``quiet_hours``, ``site_timezone``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from mappings.approved import refusals
from mappings.education_check import check
from mappings.education_content import DEFAULT_EDUCATION_DIR, EducationContent


class EducationSettings(BaseModel):
    # --- Health education
    education_dir: Path = Field(
        DEFAULT_EDUCATION_DIR, description="Health-education topics patients subscribe to from the menu, and their "
        "approved series, per language (a YAML file or a folder of them); check it with `bridge education check`."
    )
    education_weekly_cap: int = Field(
        2, ge=1, le=14, description="Most health-education messages one patient gets in any 7 days (all topics "
        "together); the next item waits."
    )

    @field_validator("education_dir")
    @classmethod
    def _content(cls, value: Path) -> Path:
        if errors := refusals(value, EducationContent.load, check, date.today()):
            raise ValueError(f"{value} (run `bridge education check`): " + "; ".join(errors))
        return value
