"""Where each value the bridge reads sits in a sending facility's HL7 v2 messages.

EHRs put the same facts in different fields (a start time in TQ1-7, SCH-11.4 or AIS-4; a filler id
in SCH-2 or a Z-segment), so positions are configured per sending facility (MSH-4.1) with a
default. Positions are written ``SEG-field[.component[.subcomponent]]`` as in HL7 v2.5.1
chapter 2 (2.5.3, "Field" notation). Code lists are HL7 tables 0201 (telecommunication use),
0202 (equipment type) and 0123 (result status); FHIR statuses are DiagnosticReport.status
(https://hl7.org/fhir/R4/valueset-diagnostic-report-status.html). Everything is validated when the
config is loaded, with errors naming the facility and the setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, ValidationError, field_validator

_PATH = re.compile(r"^(?P<segment>[A-Z][A-Z0-9]{2})-(?P<field>\d{1,3})(?:\.(?P<component>\d{1,2}))?"
                   r"(?:\.(?P<sub>\d{1,2}))?$")
TELECOM_USE_CODES = frozenset({"PRN", "ORN", "WPN", "VHN", "ASN", "EMR", "NET", "BPN", "PRS"})  # table 0201
EQUIPMENT_TYPES = frozenset({"PH", "FX", "MD", "CP", "SAT", "BP", "Internet", "X.400", "TDD", "TTY"})  # table 0202
RESULT_STATUSES = frozenset("OISAPCRFXYZ")  # table 0123
FHIR_REPORT_STATUSES = frozenset({"registered", "partial", "preliminary", "final", "amended", "corrected",
                                  "appended", "cancelled", "entered-in-error", "unknown"})


class Hl7ConfigError(ValueError):
    """The HL7 mapping config is invalid; the message names the facility and setting to fix."""


@dataclass(frozen=True)
class FieldPath:
    """One position in a message: segment, field, component and subcomponent (1-based)."""

    segment: str
    field: int
    component: int = 1
    subcomponent: int = 1

    @classmethod
    def parse(cls, text: object) -> FieldPath:
        if isinstance(text, FieldPath):
            return text
        match = _PATH.match(str(text).strip())
        if match is None or int(match["field"]) == 0 or match["component"] == "0" or match["sub"] == "0":
            raise ValueError(f"{text!r} is not a field position like 'SCH-2', 'TQ1-7.1' or 'PID-3.4.2'")
        return cls(match["segment"], int(match["field"]), int(match["component"] or 1), int(match["sub"] or 1))

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}.{self.component}.{self.subcomponent}"


Position = Annotated[FieldPath, BeforeValidator(FieldPath.parse), PlainSerializer(str)]


class FacilityMapping(BaseModel):
    """Field positions and code tables for one sending facility; the defaults follow HL7 v2.5.1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filler_id: Position = FieldPath("SCH", 2)
    placer_id: Position = FieldPath("SCH", 1)
    # Tried in order; the first present wins (v2.6+ senders use TQ1, older ones SCH-11, some only AIS/AIL).
    start: tuple[Position, ...] = (FieldPath("TQ1", 7), FieldPath("SCH", 11, 4), FieldPath("AIS", 4),
                                   FieldPath("AIL", 6))
    end: tuple[Position, ...] = (FieldPath("TQ1", 8), FieldPath("SCH", 11, 5))
    duration: Position = FieldPath("SCH", 9)
    duration_units: Position = FieldPath("SCH", 10)
    filler_status: Position = FieldPath("SCH", 25)
    location: Position = FieldPath("AIL", 3)
    patient_id: Position = FieldPath("PID", 3)
    patient_id_type: str | None = "MR"  # CX.5 of the repetition to take; None takes the first
    phone: Position = FieldPath("PID", 13)
    # Order of preference over XTN.2 use codes (table 0201) and XTN.3 equipment types (table 0202).
    phone_preference: tuple[str, ...] = ("CP", "PRN", "ORN")
    language: Position = FieldPath("PID", 15)
    report_filler_id: Position = FieldPath("OBR", 3)
    report_placer_id: Position = FieldPath("OBR", 2)
    report_status: Position = FieldPath("OBR", 25)
    report_time: Position = FieldPath("OBR", 22)
    # OBR-25 codes that mean "results ready", and the DiagnosticReport.status each becomes.
    ready_statuses: dict[str, str] = {"F": "final", "C": "corrected", "A": "amended"}
    timezone: str = "UTC"  # zone of timestamps that carry no offset
    identifier_system: str | None = None  # Appointment/DiagnosticReport identifier system; derived when None

    @field_validator("phone_preference")
    @classmethod
    def _known_phone_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [code for code in value if code not in TELECOM_USE_CODES | EQUIPMENT_TYPES]
        if unknown:
            raise ValueError(f"{unknown} are not HL7 table 0201 use codes or table 0202 equipment types")
        if not value:
            raise ValueError("name at least one use code or equipment type")
        return value

    @field_validator("ready_statuses")
    @classmethod
    def _known_statuses(cls, value: dict[str, str]) -> dict[str, str]:
        for code, status in value.items():
            if code not in RESULT_STATUSES:
                raise ValueError(f"{code!r} is not an HL7 table 0123 result status")
            if status not in FHIR_REPORT_STATUSES:
                raise ValueError(f"{status!r} is not a FHIR DiagnosticReport.status")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone") from exc
        return value

    @field_validator("start")
    @classmethod
    def _some_start(cls, value: tuple[FieldPath, ...]) -> tuple[FieldPath, ...]:
        if not value:
            raise ValueError("name at least one position for the appointment start")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Hl7Config(BaseModel):
    """The default mapping and per-facility overrides, keyed by MSH-4.1 (namespace id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: FacilityMapping = FacilityMapping()
    facilities: dict[str, FacilityMapping] = {}

    def for_facility(self, facility: str) -> FacilityMapping:
        return self.facilities.get(facility, self.default)

    @cached_property
    def segments_read(self) -> frozenset[str]:
        """Every segment any mapping reads: the parser skips the others (OBX, NTE, ...) entirely."""
        names = {"MSH", "PID", "SCH", "OBR"}
        for mapping in (self.default, *self.facilities.values()):
            for value in mapping.__dict__.values():
                paths = value if isinstance(value, tuple) else (value,)
                names.update(p.segment for p in paths if isinstance(p, FieldPath))
        return frozenset(names)


def load_config(data: Mapping[str, Any] | None) -> Hl7Config:
    """Validates a config (as read from YAML/JSON): ``{default: {...}, facilities: {NAME: {...}}}``.

    A facility's entry overrides only the keys it names; the rest come from ``default``. Raises
    :class:`Hl7ConfigError` listing every problem as ``where: what``.
    """
    data = dict(data or {})
    unknown = set(data) - {"default", "facilities"}
    if unknown:
        raise Hl7ConfigError(f"hl7 mapping: unknown keys {sorted(unknown)} (use 'default' and 'facilities')")
    base = dict(data.get("default") or {})
    problems: list[str] = []
    default = _facility("default", base, problems)
    facilities: dict[str, FacilityMapping] = {}
    for name, overrides in dict(data.get("facilities") or {}).items():
        mapping = _facility(f"facility {name!r}", {**base, **dict(overrides or {})}, problems)
        if mapping is not None:
            facilities[str(name)] = mapping
    if problems or default is None:
        raise Hl7ConfigError("hl7 mapping is invalid:\n" + "\n".join(problems))
    return Hl7Config(default=default, facilities=facilities)


def _facility(where: str, values: dict[str, Any], problems: list[str]) -> FacilityMapping | None:
    try:
        return FacilityMapping.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {location}: {error['msg']}")
        return None
