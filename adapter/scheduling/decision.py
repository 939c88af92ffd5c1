"""The values the decide step works with: its configuration, one resource version to decide
(:class:`DecideItem`) and what deciding it produced (:class:`Decision`), and the keys a resource
is known by (its reference, its version, its processing-state key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from mappings.policy import PhiProfile
from mappings.rules import Repeat


@dataclass(frozen=True)
class DecideConfig:
    profile: PhiProfile
    zone: ZoneInfo
    site_labels: dict[str, str]
    default_site_label: str
    default_language: str
    default_phone_region: str
    report_policy: Repeat


@dataclass
class Decision:
    """What one version produced (for logs, tests and the benchmark)."""

    resource_ref: str
    duplicate: bool = False
    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DecideItem:
    """One resource version to decide: as re-read from the EHR, with its Patient (read only when a rule
    fired) and the practitioners, locations, … it references, whose names the PHI guard checks too."""

    resource: dict[str, Any]
    patient: dict[str, Any] | None = None
    inbox_event_id: int | None = None
    related: Sequence[dict[str, Any]] = ()


def resource_ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def version_of(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta") or {}
    version = meta.get("versionId")
    return str(version) if version is not None else None


def state_key(resource: dict[str, Any]) -> tuple[str, str]:
    return str(resource.get("resourceType")), str(resource.get("id"))
