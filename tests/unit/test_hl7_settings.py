"""The HL7 feed's settings are checked at start-up in words an administrator can act on: the mapping
file's every problem named by facility and setting, and write-back through FHIR only with FHIR patients."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.settings import SettingsError, load_settings


def test_a_bad_mapping_file_lists_every_problem_by_facility_and_setting(tmp_path: Path) -> None:
    mapping = tmp_path / "hl7.yaml"
    mapping.write_text("default: {timezone: Europe/Lisbon}\n"
                       "facilities:\n  EPICPROD: {filler_id: SCH2, ready_statuses: {F: done}}\n", encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        load_settings(mode="demo", hl7_enabled=True, hl7_mapping_file=str(mapping))
    text = str(raised.value)
    assert "BRIDGE_HL7_MAPPING_FILE" in text
    assert "facility 'EPICPROD': filler_id" in text and "not a field position like 'SCH-2'" in text
    assert "'done' is not a FHIR DiagnosticReport.status" in text
    mapping.write_text("facilities:\n  EPICPROD: {filler_id: SCH-1}\n", encoding="utf-8")
    assert load_settings(mode="demo", hl7_mapping_file=str(mapping)).hl7_mapping_file == mapping


def test_the_feed_is_off_by_default_and_fhir_write_back_needs_fhir_patients() -> None:
    assert load_settings(mode="demo").hl7_enabled is False
    with pytest.raises(SettingsError, match="hl7_writeback_via_fhir needs hl7_patient_source=fhir"):
        load_settings(mode="demo", hl7_writeback_via_fhir=True)
    assert load_settings(mode="demo", hl7_writeback_via_fhir=True, hl7_patient_source="fhir").hl7_writeback_via_fhir
