"""Helpers shared by the mapping tests: fixture files, render contexts, temporary rule folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mappings.context import RenderContext
from mappings.policy import PhiProfile
from tests.mappings.mapping_corpus import FIXTURES_DIR, FakeMinter

PUBLIC_BASE_URL = "https://bridge.hospital.example"
SITE_LABELS = {"Location/synthetic-north": "North Campus", "Location/1": "South Wing"}
DEFAULT_LABEL = "Main Campus"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))
    return data


def context(
    language: str = "en_US",
    profile: PhiProfile = "default",
    zone: str = "America/New_York",
    minter: FakeMinter | None = None,
    labels: dict[str, str] | None = None,
) -> RenderContext:
    minter = minter or FakeMinter("test")
    return RenderContext(
        language=language, profile=profile, zone=ZoneInfo(zone),
        site_labels=SITE_LABELS if labels is None else labels, default_site_label=DEFAULT_LABEL,
        mint_link=minter.link, mint_action=minter.action,
    )


def write_rules(directory: Path, text: str, name: str = "rules.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")
    return directory
