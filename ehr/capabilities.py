"""What the EHR's FHIR server says it can do, read once from its CapabilityStatement.

``rest.resource[type].interaction`` lists the type-level interactions (``patch``, ``update``, ...)
and ``rest.interaction`` the system-level ones (``transaction``, ``batch``), see
https://hl7.org/fhir/R4/capabilitystatement.html. Writers use it to pick the safest write the
server offers: a JSON Patch over a PUT of a re-read copy, a transaction over a sequence of calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ehr.client import JSON_PATCH, FhirClient
from ehr.errors import FhirError

logger = logging.getLogger(__name__)


class ServerCapabilities:
    """A parsed CapabilityStatement (only the parts the bridge asks about)."""

    def __init__(self, statement: dict[str, Any] | None = None) -> None:
        self._types: dict[str, set[str]] = {}
        self._system: set[str] = set()
        formats = (statement or {}).get("patchFormat")
        self.patch_formats: tuple[str, ...] | None = (
            tuple(str(f) for f in formats) if isinstance(formats, list) else None)
        rests = (statement or {}).get("rest")
        for rest in rests if isinstance(rests, list) else []:
            if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
                continue
            self._system |= _codes(rest.get("interaction"))
            resources = rest.get("resource")
            for resource in resources if isinstance(resources, list) else []:
                if isinstance(resource, dict) and isinstance(resource.get("type"), str):
                    self._types.setdefault(resource["type"], set()).update(_codes(resource.get("interaction")))

    @classmethod
    def unknown(cls) -> ServerCapabilities:
        """Nothing declared: callers fall back to the most conservative interactions."""
        return cls(None)

    def supports(self, resource_type: str, interaction: str) -> bool:
        return interaction in self._types.get(resource_type, set())

    def supports_system(self, interaction: str) -> bool:
        return interaction in self._system

    def supports_json_patch(self, resource_type: str) -> bool:
        """``patch`` is declared for the type and JSON Patch is among ``patchFormat`` (an absent
        ``patchFormat`` is read as JSON Patch, the format every R4 server that patches accepts)."""
        if not self.supports(resource_type, "patch"):
            return False
        return self.patch_formats is None or any(JSON_PATCH in f for f in self.patch_formats)


class CapabilityCache:
    """Fetches ``GET [base]/metadata`` once per ``ttl_seconds`` (concurrent callers share one call).

    A failed fetch is not cached: :meth:`get` answers :meth:`ServerCapabilities.unknown` for
    that call and asks again next time.
    """

    def __init__(self, fhir: FhirClient, *, ttl_seconds: float = 3600.0) -> None:
        self._fhir = fhir
        self._ttl = ttl_seconds
        self._value: ServerCapabilities | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def fixed(cls, fhir: FhirClient, capabilities: ServerCapabilities) -> CapabilityCache:
        """A cache that never asks the server (tests, or an operator override)."""
        cache = cls(fhir, ttl_seconds=float("inf"))
        cache._value, cache._fetched_at = capabilities, time.monotonic()
        return cache

    async def get(self) -> ServerCapabilities:
        if self._value is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._value
        async with self._lock:
            if self._value is not None and time.monotonic() - self._fetched_at < self._ttl:
                return self._value
            try:
                statement = await self._fhir.capabilities()
            except FhirError as error:
                logger.warning("CapabilityStatement unavailable (%s, HTTP %s); using conservative writes",
                               type(error).__name__, error.status_code)
                return ServerCapabilities.unknown()
            self._value, self._fetched_at = ServerCapabilities(statement), time.monotonic()
            return self._value


def _codes(interactions: Any) -> set[str]:
    return {str(i["code"]) for i in interactions if isinstance(i, dict) and isinstance(i.get("code"), str)} \
        if isinstance(interactions, list) else set()
