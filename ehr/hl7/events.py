"""The typed events an HL7 v2 message yields: what storage keeps and the decide step reads.

``SIU`` (HL7 v2.5.1 chapter 10, scheduling) yields one :class:`AppointmentEvent`; ``ORU^R01``
(chapter 7, observation reporting) one :class:`ResultEvent` per OBR. Fields that identify the
patient are left out of ``repr`` so an event printed in a log or a traceback carries no PHI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# HL7 v2.5.1 chapter 10.3: the SIU triggers the bridge takes and what each means for the appointment.
APPOINTMENT_TRIGGERS = {
    "S12": "booked",  # notification of new appointment booking
    "S13": "booked",  # notification of appointment rescheduling
    "S14": "booked",  # notification of appointment modification
    "S15": "cancelled",  # notification of appointment cancellation
    "S17": "cancelled",  # notification of appointment deletion
    "S26": "noshow",  # notification that patient did not show up
}
# Triggers after which a later S12-S14 for the same filler id is out of order, not a revival.
TERMINAL_TRIGGERS = frozenset({"S15", "S17", "S26"})


@dataclass(frozen=True)
class PatientRef:
    """The patient as the message names them: an identifier (PID-3 CX.1) with its assigning authority."""

    identifier: str = field(repr=False)
    assigner: str | None  # CX.4 namespace id, else its universal id
    assigner_oid: str | None  # CX.4.2 when CX.4.3 is ISO
    identifier_type: str | None  # CX.5, e.g. MR
    phone: str | None = field(default=None, repr=False)  # digits as sent (XTN.12, else country/area/local, else XTN.1)
    phone_use: str | None = None  # the XTN.2 use code or XTN.3 equipment type it was chosen by
    language: str | None = None  # PID-15.1 as sent (ISO 639 code, or a local code)


@dataclass(frozen=True)
class Location:
    """Where an appointment takes place (AIL-3, PL): the point-of-care code and a display."""

    code: str | None
    display: str | None


@dataclass(frozen=True)
class AppointmentEvent:
    """One SIU message about one appointment, keyed by (sending facility, filler id)."""

    trigger: str
    facility: str
    filler_id: str
    placer_id: str | None
    status: str  # FHIR Appointment.status
    filler_status: str | None  # SCH-25.1 as sent
    start: datetime | None
    end: datetime | None
    location: Location | None
    patient: PatientRef
    message_time: datetime
    control_id: str

    @property
    def key(self) -> tuple[str, str]:
        """Storage keeps the original order per this key (sending facility, filler id)."""
        return (self.facility, self.filler_id)

    @property
    def terminal(self) -> bool:
        return self.trigger in TERMINAL_TRIGGERS


@dataclass(frozen=True)
class ResultEvent:
    """One OBR of an ORU^R01: a report's status, never any OBX value."""

    facility: str
    filler_id: str
    placer_id: str | None
    result_status: str  # OBR-25 as sent (HL7 table 0123)
    status: str | None  # FHIR DiagnosticReport.status when the status is a "ready" one, else None
    issued: datetime | None  # OBR-22
    patient: PatientRef
    message_time: datetime
    control_id: str

    @property
    def ready(self) -> bool:
        return self.status is not None

    @property
    def key(self) -> tuple[str, str]:
        return (self.facility, self.filler_id)


@dataclass(frozen=True)
class ParsedMessage:
    """A message accepted for storage: its header facts, its events and the raw text (kept encrypted)."""

    message_type: str  # MSH-9.1: SIU or ORU
    trigger: str  # MSH-9.2
    control_id: str  # MSH-10
    facility: str  # MSH-4.1, the dedupe scope of MSH-10
    application: str  # MSH-3.1
    message_time: datetime  # MSH-7
    version: str  # MSH-12.1
    events: tuple[AppointmentEvent | ResultEvent, ...]
    raw: str = field(repr=False)

    @property
    def dedupe_key(self) -> tuple[str, str]:
        """HL7 v2.5.1 2.10.1: MSH-10 is unique per sending system; so (facility, control id)."""
        return (self.facility, self.control_id)
