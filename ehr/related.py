"""The resources an Appointment or DiagnosticReport points at whose names must never reach a
message — practitioners, locations, organizations, services — read so the PHI guard can check
their names too, not only the ``display`` texts the resource happens to carry.

They are not patient data and change rarely, so reads are cached per process for a few minutes:
one read per practitioner or clinic, not one per event. They are not audited as patient reads
(BALP PatientRead is for a patient's data); the resource that references them is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Protocol

from ehr.errors import FhirNotFoundError, FhirRequestError

RELATED_TYPES = frozenset({"Practitioner", "PractitionerRole", "Location", "Organization", "HealthcareService"})
_REFERENCE_FIELDS = ("participant", "performer", "resultsInterpreter", "location")
CACHE_SECONDS = 300.0
CACHE_SIZE = 5000


def related_references(resource: dict[str, Any]) -> list[str]:
    """``Type/id`` of the related resources worth reading, in order, without duplicates."""
    found: list[str] = []
    for reference in _references(resource):
        kind, _, rid = reference.partition("/")
        if kind in RELATED_TYPES and rid and "/" not in rid and reference not in found:
            found.append(reference)
    return found


def _references(resource: dict[str, Any]) -> Iterator[str]:
    for field in _REFERENCE_FIELDS:
        value = resource.get(field)
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            actor = item.get("actor") if isinstance(item.get("actor"), dict) else item
            reference = actor.get("reference") if isinstance(actor, dict) else None
            if isinstance(reference, str):
                yield reference


class ResourceReader(Protocol):
    """What this needs of :class:`ehr.client.FhirClient` (a fake in unit tests)."""

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any]: ...


class RelatedReader:
    """Reads related resources through a small time-bounded cache."""

    def __init__(self, fhir: ResourceReader, ttl_seconds: float = CACHE_SECONDS) -> None:
        self.fhir = fhir
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def read_all(self, resource: dict[str, Any]) -> list[dict[str, Any]]:
        results = await asyncio.gather(*(self._read(ref) for ref in related_references(resource)))
        return [found for found in results if found is not None]

    async def _read(self, reference: str) -> dict[str, Any] | None:
        now = time.monotonic()
        cached = self._cache.get(reference)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        kind, _, rid = reference.partition("/")
        try:
            found: dict[str, Any] | None = await self.fhir.read(kind, rid)
        except (FhirNotFoundError, FhirRequestError):
            found = None  # gone or not readable: the guard still has the resource's own displays
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[reference] = (now, found)
        return found
