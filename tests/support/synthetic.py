"""Builders for clearly synthetic FHIR R4 resources (plain dicts) for tests and demos.

Every resource carries the ``HTEST`` ("test health data") security tag, a name or text that says
it is synthetic, a phone number from the fictional 555-01xx range, and a unique identifier (so a
test can find its own resources on a shared server). The public examples in ``tests/fixtures/fhir``
have fixed dates, few appointments that are not booked and no preliminary or amended reports; these
builders make appointments and reports of any status, at any time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Resource = dict[str, Any]
AppointmentStatus = Literal["booked", "proposed", "cancelled"]
ReportStatus = Literal["final", "preliminary", "amended"]

SYNTHETIC_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "HTEST",
    "display": "test health data",
}
IDENTIFIER_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.99"  # HL7's example OID arc: never a real system
PATIENT_NAME = "Synthetic Testpatient"
REPORT_CONCLUSION = "SYNTHETIC RESULT TEXT - not real data"  # a sentinel PHI-leak tests can look for

_PARTICIPANT_STATUS = {"booked": "accepted", "proposed": "needs-action", "cancelled": "declined"}


def reference(resource: Resource) -> str:
    """``"Type/id"`` for a resource that has an id (e.g. one returned by the server)."""
    return f"{resource['resourceType']}/{resource['id']}"


def synthetic_patient(
    *, number: int = 0, language: str = "en-US", patient_id: str | None = None
) -> Resource:
    """Patient "Synthetic Testpatient", mobile ``+1 201-555-01{number:02d}``, preferred language."""
    if not 0 <= number <= 99:
        raise ValueError("number picks the phone suffix 00-99")
    patient: Resource = {
        "resourceType": "Patient",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [_identifier("patient")],
        "active": True,
        "name": [{"use": "official", "text": PATIENT_NAME, "family": "Testpatient", "given": ["Synthetic"]}],
        "telecom": [{"system": "phone", "value": f"+1 201-555-01{number:02d}", "use": "mobile"}],
        "communication": [{
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}], "text": language},
            "preferred": True,
        }],
    }
    if patient_id:
        patient["id"] = patient_id
    return patient


def synthetic_location(*, name: str = "Synthetic Clinic North", location_id: str | None = None) -> Resource:
    location: Resource = {
        "resourceType": "Location",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [_identifier("location")],
        "status": "active",
        "name": name,
    }
    if location_id:
        location["id"] = location_id
    return location


def synthetic_appointment(
    patient_ref: str = "Patient/synthetic-patient",
    *,
    status: AppointmentStatus = "booked",
    start: datetime | None = None,
    minutes: int = 30,
    location_ref: str = "Location/synthetic-clinic",
    appointment_id: str | None = None,
) -> Resource:
    """An Appointment with the patient and a Location as participants, starting in the future
    (three days from now on the hour, unless ``start`` is given; it must be timezone-aware)."""
    begin = start or (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    if begin.tzinfo is None:
        raise ValueError("start must be timezone-aware (FHIR instants carry an offset)")
    participant_status = _PARTICIPANT_STATUS[status]
    appointment: Resource = {
        "resourceType": "Appointment",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [_identifier("appointment")],
        "status": status,
        "description": "Synthetic test appointment",
        "start": begin.isoformat(timespec="seconds"),
        "end": (begin + timedelta(minutes=minutes)).isoformat(timespec="seconds"),
        "minutesDuration": minutes,
        "participant": [
            {"actor": {"reference": patient_ref}, "required": "required", "status": participant_status},
            {"actor": {"reference": location_ref}, "required": "required", "status": participant_status},
        ],
    }
    if status == "cancelled":
        appointment["cancelationReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                        "code": "pat", "display": "Patient"}],
        }
    if appointment_id:
        appointment["id"] = appointment_id
    return appointment


def synthetic_diagnostic_report(
    patient_ref: str = "Patient/synthetic-patient",
    *,
    status: ReportStatus = "final",
    issued: datetime | None = None,
    report_id: str | None = None,
) -> Resource:
    """A laboratory DiagnosticReport with a sentinel conclusion (:data:`REPORT_CONCLUSION`)."""
    when = issued or datetime.now(UTC).replace(microsecond=0)
    report: Resource = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [_identifier("report")],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "LAB", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2",
                             "display": "CBC panel - Blood by Automated count"}],
                 "text": "Synthetic test panel"},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": (when - timedelta(hours=2)).isoformat(timespec="seconds"),
        "issued": when.isoformat(timespec="seconds"),
        "conclusion": REPORT_CONCLUSION,
    }
    if report_id:
        report["id"] = report_id
    return report


def synthetic_schedule(actor_ref: str = "Location/synthetic-clinic", *, schedule_id: str | None = None) -> Resource:
    """An active Schedule for ``actor_ref`` (a Location or Practitioner), no service type (PHI-free)."""
    schedule: Resource = {
        "resourceType": "Schedule",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [_identifier("schedule")],
        "active": True,
        "actor": [{"reference": actor_ref}],
        "comment": "Synthetic test schedule",
    }
    if schedule_id:
        schedule["id"] = schedule_id
    return schedule


def synthetic_slot(
    schedule_ref: str,
    start: datetime,
    *,
    minutes: int = 30,
    status: Literal["free", "busy", "busy-unavailable", "busy-tentative", "entered-in-error"] = "free",
    slot_id: str | None = None,
) -> Resource:
    """A Slot of ``minutes`` on ``schedule_ref`` starting at ``start`` (timezone-aware)."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (FHIR instants carry an offset)")
    slot: Resource = {
        "resourceType": "Slot",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [_identifier("slot")],
        "schedule": {"reference": schedule_ref},
        "status": status,
        "start": start.isoformat(timespec="seconds"),
        "end": (start + timedelta(minutes=minutes)).isoformat(timespec="seconds"),
        "comment": "Synthetic test slot",
    }
    if slot_id:
        slot["id"] = slot_id
    return slot


def _identifier(kind: str) -> dict[str, str]:
    return {"system": IDENTIFIER_SYSTEM, "value": f"synthetic-{kind}-{uuid.uuid4().hex[:12]}"}
