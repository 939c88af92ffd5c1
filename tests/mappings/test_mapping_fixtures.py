"""Our synthetic fixtures are valid FHIR R4 (checked with fhir.resources' R4B models), so the
mapping tests exercise what a real server could send, not shapes we invented."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.mappings.mapping_corpus import FIXTURES_DIR
from tests.support.examples import json_files

FILES = json_files(FIXTURES_DIR)  # raises when empty: collection fails instead of running nothing


def validate(resource: dict[str, Any]) -> None:
    module = importlib.import_module(f"fhir.resources.R4B.{resource['resourceType'].lower()}")
    getattr(module, resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_fixture_is_valid_r4_and_clearly_synthetic(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    validate(resource)
    assert "synthetic" in resource["id"]


def test_the_validator_would_notice_a_bad_fixture() -> None:
    resource = json.loads((FIXTURES_DIR / "synthetic__appointment-pending.json").read_text(encoding="utf-8"))
    resource["start"] = "2026-12-01"  # an instant needs a time and a zone
    with pytest.raises(ValidationError):
        validate(resource)
    resource = {**resource, "start": "2026-12-01T15:30:00Z", "patientInstructions": "typo"}
    with pytest.raises(ValidationError):
        validate(resource)
