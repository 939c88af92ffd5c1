"""The values the decide step works with: its configuration, one resource version to decide
(:class:`DecideItem`) and what deciding it produced (:class:`Decision`), the keys a resource
is known by (its reference, its version, its processing-state key), and the start an appointment
message is about (:func:`start_bound`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mappings.fhir_time import parse_instant
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


# R4 Appointment statuses (https://hl7.org/fhir/R4/valueset-appointmentstatus.html) that describe the
# visit itself or what followed it: a message about them is still right once the start has passed.
# Every other status (proposed, pending, booked, waitlist, cancelled, entered-in-error) speaks of a
# visit to come, so a confirmation, reminder, change or cancellation notice after the start is wrong.
AFTER_START = frozenset({"arrived", "checked-in", "fulfilled", "noshow"})
STARTED = "appointment_started"  # the skip (decide) and suppression (claim) reason


def appointment_start(appointment: dict[str, Any]) -> datetime | None:
    """``Appointment.start`` as an aware instant; None when absent or not a FHIR instant."""
    text = appointment.get("start")
    if not isinstance(text, str):
        return None
    try:
        return parse_instant(text)
    except ValueError:
        return None


def start_bound(resource: dict[str, Any]) -> datetime | None:
    """The start a message about this version is bound to: an Appointment's start unless its status
    says the visit began (:data:`AFTER_START`). None for any other resource (a DiagnosticReport's
    "results ready" is not about a start) and for an appointment without a readable start."""
    if resource.get("resourceType") != "Appointment" or resource.get("status") in AFTER_START:
        return None
    return appointment_start(resource)
