"""Settings of the patients and the site: how phone numbers without a country are read, the site's time
zone and public labels, the default message language, the PHI profile, where opt-in comes from, how often
a report is announced, and the folder of mapping rules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, Field, field_validator

from adapter.settings.values import PACKAGE_ROOT

DEFAULT_MAPPINGS_DIR = PACKAGE_ROOT / "mappings" / "rules"


class SiteSettings(BaseModel):
    # --- patients and sites
    default_phone_region: str = Field("US", description="Region for phone numbers written without +country.")
    site_timezone: str = Field("America/New_York", description="IANA time zone of the site.")
    site_label_default: str = Field("Main Campus", description="Public site label used in messages.")
    site_labels: dict[str, str] = Field(
        default_factory=dict, description="Public labels by Location reference, e.g. {'Location/12': 'North'}."
    )
    default_language: str = Field("en_US", description="Template language when the patient's has none.")
    phi_profile: Literal["default", "strict"] = Field(
        "default", description="`strict` drops even date, time and site from messages."
    )
    consent_source: Literal["registry", "assume"] = Field(
        "registry", description="Where opt-in comes from: the local registry, or `assume` (demo only)."
    )
    report_policy: Literal["once", "every_release"] = Field(
        "once", description="Results-ready once per report, or again after amended/corrected/appended."
    )
    mappings_dir: Path = Field(DEFAULT_MAPPINGS_DIR, description="Folder of mapping rule files.")

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a known IANA time zone (e.g. Europe/Madrid)") from exc
        return value

    @field_validator("default_phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a two-letter region code (e.g. US, ES, GB)")
        return value.upper()

    @field_validator("site_labels")
    @classmethod
    def _labels_are_references(cls, value: dict[str, str]) -> dict[str, str]:
        for ref in value:
            if not ref.startswith("Location/"):
                raise ValueError(f"key {ref!r} must be a Location reference such as 'Location/12'")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.site_timezone)
