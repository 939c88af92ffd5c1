"""The synthetic builders produce valid R4 resources that say they are synthetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.support.synthetic import (
    PATIENT_NAME,
    SYNTHETIC_TAG,
    synthetic_appointment,
    synthetic_diagnostic_report,
    synthetic_location,
    synthetic_patient,
)

RESOURCES: list[dict[str, Any]] = [
    synthetic_patient(number=7, language="es-ES"),
    synthetic_location(),
    *(synthetic_appointment(status=status) for status in ("booked", "proposed", "cancelled")),
    *(synthetic_diagnostic_report(status=status) for status in ("final", "preliminary", "amended")),
]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r['resourceType']}-{r.get('status', '')}")
def test_valid_r4_and_tagged_as_test_data(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert resource["meta"]["tag"] == [SYNTHETIC_TAG]


def test_patient_is_obviously_synthetic() -> None:
    patient = synthetic_patient(number=7, language="es-ES")
    assert patient["name"][0]["text"] == PATIENT_NAME
    assert patient["telecom"] == [{"system": "phone", "value": "+1 201-555-0107", "use": "mobile"}]
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "es-ES"
    with pytest.raises(ValueError):
        synthetic_patient(number=100)


def test_appointments_start_in_the_future_with_patient_and_location() -> None:
    appointment = synthetic_appointment("Patient/p1", location_ref="Location/l1")
    assert datetime.fromisoformat(appointment["start"]) > datetime.now(UTC) + timedelta(days=1)
    assert [p["actor"]["reference"] for p in appointment["participant"]] == ["Patient/p1", "Location/l1"]
    assert "cancelationReason" in synthetic_appointment(status="cancelled")
    with pytest.raises(ValueError):
        synthetic_appointment(start=datetime(2030, 1, 1, 9, 0))  # naive: refused
