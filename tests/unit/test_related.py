"""Related resources (practitioners, locations, …) are read once per cache period, so the PHI
guard can check their names without an EHR read per event."""

from __future__ import annotations

from typing import Any

from ehr.errors import FhirNotFoundError
from ehr.related import RelatedReader, related_references
from tests.support.synthetic import synthetic_appointment, synthetic_diagnostic_report


class FakeFhir:
    """An in-memory FHIR reader: resources by reference, and a log of what was read."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources = resources
        self.reads: list[str] = []

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        reference = f"{resource_type}/{resource_id}"
        self.reads.append(reference)
        if reference not in self.resources:
            raise FhirNotFoundError("not found", operation="read", resource_type=resource_type, status_code=404)
        return self.resources[reference]


def test_references_of_appointments_and_reports() -> None:
    appointment = synthetic_appointment("Patient/p1", location_ref="Location/l1")
    appointment["participant"].append({"actor": {"reference": "Practitioner/d1", "display": "Doctor X"}})
    appointment["participant"].append({"actor": {"reference": "Practitioner/d1"}})  # listed twice
    assert related_references(appointment) == ["Location/l1", "Practitioner/d1"]  # never the patient
    report = synthetic_diagnostic_report("Patient/p1")
    report["performer"] = [{"reference": "Organization/lab"}, {"reference": "https://elsewhere/Practitioner/9"}]
    report["resultsInterpreter"] = [{"reference": "PractitionerRole/r1"}]
    assert related_references(report) == ["Organization/lab", "PractitionerRole/r1"]


async def test_reads_are_cached_and_missing_ones_ignored() -> None:
    fhir = FakeFhir({"Location/l1": {"resourceType": "Location", "id": "l1", "name": "Synthetic Wing"}})
    reader = RelatedReader(fhir)
    appointment = synthetic_appointment("Patient/p1", location_ref="Location/l1")
    appointment["participant"].append({"actor": {"reference": "Practitioner/gone"}})
    first = await reader.read_all(appointment)
    second = await reader.read_all(appointment)
    assert [r["name"] for r in first] == ["Synthetic Wing"] and second == first
    assert sorted(fhir.reads) == ["Location/l1", "Practitioner/gone"]  # each read once


async def test_expired_cache_entries_are_read_again() -> None:
    fhir = FakeFhir({"Location/l1": {"resourceType": "Location", "id": "l1", "name": "Synthetic Wing"}})
    reader = RelatedReader(fhir, ttl_seconds=0.0)
    appointment = synthetic_appointment("Patient/p1", location_ref="Location/l1")
    await reader.read_all(appointment)
    await reader.read_all(appointment)
    assert fhir.reads == ["Location/l1", "Location/l1"]
