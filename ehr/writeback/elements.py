"""Reading the FHIR elements write-back relies on, tolerating malformed input: references
(https://hl7.org/fhir/R4/references.html), ``meta.versionId`` and ``instant``/``dateTime`` values.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

Resource = dict[str, Any]
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # https://hl7.org/fhir/R4/datatypes.html#id


def id_of(reference: str, resource_type: str) -> str:
    """The id of a ``Type/id`` reference (relative, absolute or versioned) of the expected type."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != resource_type or not _ID_RE.match(parts[-1]):
        raise ValueError(f"expected a {resource_type} reference")
    return parts[-1]


def same_ref(value: Any, wanted: str) -> bool:
    """``actor.reference`` names ``wanted`` (``Type/id``), relative, absolute or versioned."""
    reference = ref(value)
    if reference is None:
        return False
    if reference == wanted:
        return True
    kind = wanted.split("/")[0]
    try:
        return f"{kind}/{id_of(reference, kind)}" == wanted
    except ValueError:
        return False


def slot_refs(appointment: Resource) -> list[str]:
    """The references in ``Appointment.slot``, in order."""
    return [r for r in (ref(s) for s in as_list(appointment.get("slot"))) if r]


def version(resource: Resource) -> str | None:
    version_id = as_dict(resource.get("meta")).get("versionId")
    return str(version_id) if version_id is not None else None


def instant(value: Any) -> datetime | None:
    """A timezone-aware datetime, or None (not a string, not ISO 8601, or without an offset)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def ref(value: Any) -> str | None:
    reference = as_dict(value).get("reference")
    return reference if isinstance(reference, str) else None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
