"""Parses one HL7 v2 message into a :class:`ehr.hl7.events.ParsedMessage`, or rejects it with a reason.

Message structures per HL7 v2.5.1: SIU^S12-S26 (chapter 10.4, SCH/TQ1/PID/RGS/AIS/AIL), ORU^R01
(chapter 7.3.1, PID/OBR/OBX), MSH (chapter 2.15.9). Parsing uses python-hl7, chosen over hl7apy for
taking every public sample and real-world quirk tried (v2.9, no MSH-12, PRT/Z-segments) at over
20 times the speed (``bench/hl7_library_choice.py``). Segment terminators CR, LF and CRLF are all accepted:
files and some engines use LF although chapter 2.5.2 says CR.

Where each value sits comes from the sending facility's :class:`ehr.hl7.config.FacilityMapping`.
OBX segments are never read: results stay in the EHR.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import hl7
from hl7.containers import Message, Segment

from ehr.hl7.config import FacilityMapping, FieldPath, Hl7Config
from ehr.hl7.errors import (
    Hl7SyntaxError,
    InvalidFieldError,
    MissingFieldError,
    MissingSegmentError,
    UnsupportedEventError,
    UnsupportedMessageError,
)
from ehr.hl7.events import APPOINTMENT_TRIGGERS, AppointmentEvent, Location, ParsedMessage, PatientRef, ResultEvent
from ehr.hl7.timestamps import InvalidTimestamp, parse_dtm

_TERMINATORS = re.compile(r"\r\n|\n|\r")
# HL7 table 0278 (filler status codes) -> FHIR Appointment.status, for S12-S14 whose trigger says "booked".
_FILLER_STATUS = {"pending": "pending", "waitlist": "waitlist", "booked": "booked", "overbook": "booked",
                  "started": "arrived", "arrived": "arrived", "complete": "fulfilled", "cancelled": "cancelled",
                  "dc": "cancelled", "deleted": "cancelled", "noshow": "noshow"}
_DURATION_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "min": 60, "m": 60, "minute": 60, "minutes": 60,
                   "mins": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400}


def decode(raw: bytes) -> str:
    """The message text; HL7's default character set is ASCII, UTF-8 is common, Latin-1 never fails."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def normalise(text: str) -> str:
    """CR-terminated segments with no surrounding whitespace (HL7 v2.5.1 2.5.2)."""
    return _TERMINATORS.sub("\r", text.strip())


def parse_message(raw: str | bytes, config: Hl7Config) -> ParsedMessage:
    """The message's header and events; raises an :class:`ehr.hl7.errors.Hl7MessageError` to reject it."""
    text = normalise(decode(raw) if isinstance(raw, bytes) else raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7SyntaxError("the message does not start with an MSH segment", location="MSH")
    try:
        # Only the segments a mapping reads are parsed: OBX values are never even split into fields.
        msg = _Segments(hl7.parse("\r".join(s for s in text.split("\r") if s[:3] in config.segments_read)))
    except Exception as exc:  # python-hl7 raises bare ParseException/ValueError/IndexError on garbage
        raise Hl7SyntaxError("the message is not readable HL7 v2", location="MSH") from exc
    message_type, trigger = _get(msg, FieldPath("MSH", 9, 1)), _get(msg, FieldPath("MSH", 9, 2))
    control_id = _get(msg, FieldPath("MSH", 10))
    if not control_id:
        raise MissingFieldError("no message control id", location="MSH-10")
    facility = _get(msg, FieldPath("MSH", 4)) or _get(msg, FieldPath("MSH", 3))
    if not facility:
        raise MissingFieldError("no sending facility or application", location="MSH-4")
    mapping = config.for_facility(facility)
    sent = _get(msg, FieldPath("MSH", 7))
    if not sent:
        raise MissingFieldError("no message date/time", location="MSH-7")
    message_time = _time(sent, mapping, "MSH-7")
    events: tuple[AppointmentEvent | ResultEvent, ...]
    if message_type == "SIU":
        if trigger not in APPOINTMENT_TRIGGERS:
            raise UnsupportedEventError(f"SIU^{_code(trigger)} is not taken (S12, S13, S14, S15, S17, S26 are)",
                                        location="MSH-9")
        events = (_appointment(msg, mapping, trigger, facility=facility, message_time=message_time,
                                control_id=control_id),)
    elif message_type == "ORU":
        if trigger != "R01":
            raise UnsupportedEventError(f"ORU^{_code(trigger)} is not taken (R01 is)", location="MSH-9")
        events = _results(msg, mapping, facility=facility, message_time=message_time, control_id=control_id)
    else:
        raise UnsupportedMessageError(f"message type {_code(message_type)} is not taken (SIU, ORU are)",
                                      location="MSH-9")
    return ParsedMessage(message_type=message_type, trigger=trigger, control_id=control_id, facility=facility,
                         application=_get(msg, FieldPath("MSH", 3)), message_time=message_time,
                         version=_get(msg, FieldPath("MSH", 12)), events=events, raw=text)


def _code(value: str) -> str:
    """A message type or trigger for an error text; anything else a sender put there is not echoed."""
    return value if re.fullmatch(r"[A-Z0-9]{3}", value) else "(unreadable)"


class _Segments:
    """The parsed message with its segments indexed by name once (python-hl7 scans the list per lookup)."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.by_name: dict[str, list[Segment]] = {}
        for segment in msg:
            self.by_name.setdefault(str(segment[0][0]), []).append(segment)
        self.repetition_sep = msg.separators[2]

    def count(self, name: str) -> int:
        return len(self.by_name.get(name, ()))

    def repetitions(self, path: FieldPath, index: int = 1) -> int:
        found = self.by_name.get(path.segment, ())
        if len(found) < index or len(found[index - 1]) <= path.field:
            return 0
        return str(found[index - 1][path.field]).count(self.repetition_sep) + 1


def _get(msg: _Segments, path: FieldPath, index: int = 1, repetition: int = 1,
         component: int | None = None, sub: int | None = None) -> str:
    """One unescaped value, '' when the segment, field or component is absent."""
    found = msg.by_name.get(path.segment, ())
    if len(found) < index:
        return ""
    try:
        value = found[index - 1].extract_field(index, path.field, repetition, component or path.component,
                                               sub or path.subcomponent)
    except IndexError:
        return ""
    return str(value).strip()  # Segment.extract_field already unescapes (HL7 v2.5.1 2.7.4)


def _time(value: str, mapping: FacilityMapping, location: str) -> datetime:
    try:
        return parse_dtm(value, mapping.zone)
    except InvalidTimestamp as exc:
        raise InvalidFieldError(f"not a date/time: {exc}", location=location) from exc


def _first(msg: _Segments, paths: tuple[FieldPath, ...]) -> tuple[str, FieldPath] | None:
    """The first non-empty value over ``paths``, each tried in every occurrence of its segment."""
    for path in paths:
        for index in range(1, msg.count(path.segment) + 1):
            value = _get(msg, path, index)
            if value:
                return value, path
    return None


def _patient(msg: _Segments, mapping: FacilityMapping, index: int = 1) -> PatientRef:
    path = mapping.patient_id
    if msg.count(path.segment) < index:
        raise MissingSegmentError(f"no {path.segment} segment", location=path.segment)
    chosen = None
    for rep in range(1, msg.repetitions(path, index) + 1):
        if not _get(msg, path, index, rep):
            continue
        if chosen is None or (mapping.patient_id_type and _get(msg, path, index, rep, 5) == mapping.patient_id_type):
            chosen = rep
            if mapping.patient_id_type is None or _get(msg, path, index, rep, 5) == mapping.patient_id_type:
                break
    if chosen is None:
        raise MissingFieldError("no patient identifier", location=f"{path.segment}-{path.field}")
    universal_type = _get(msg, path, index, chosen, 4, 3)
    phone, use = _phone(msg, mapping, index)
    return PatientRef(
        identifier=_get(msg, path, index, chosen),
        assigner=_get(msg, path, index, chosen, 4, 1) or _get(msg, path, index, chosen, 4, 2) or None,
        assigner_oid=_get(msg, path, index, chosen, 4, 2) or None if universal_type == "ISO" else None,
        identifier_type=_get(msg, path, index, chosen, 5) or None,
        phone=phone, phone_use=use,
        language=_get(msg, mapping.language, index) or None,
    )


def _phone(msg: _Segments, mapping: FacilityMapping, index: int) -> tuple[str | None, str | None]:
    """The preferred number of the XTN field by use code (XTN.2) or equipment type (XTN.3).

    A number with neither (v2.3 senders, plain ``(555)555-0100``) counts as PRN: PID-13 is the home
    phone field (HL7 v2.5.1 3.4.2.13).
    """
    path = mapping.phone
    candidates: list[tuple[set[str], str]] = []
    for rep in range(1, msg.repetitions(path, index) + 1):
        def part(component: int, rep: int = rep) -> str:
            return _get(msg, path, index, rep, component)
        codes = {part(2), part(3)} - {""} or {"PRN"}
        if part(12):
            number = part(12)
        elif part(7):
            number = ("+" + part(5) if part(5) else "") + part(6) + part(7)
        else:
            number = part(1)
        digits = re.sub(r"[^\d+]", "", number)
        if len(digits.lstrip("+")) >= 6:
            candidates.append((codes, digits))
    for wanted in mapping.phone_preference:
        for codes, digits in candidates:
            if wanted in codes:
                return digits, wanted
    return None, None


def _appointment(msg: _Segments, mapping: FacilityMapping, trigger: str, *, facility: str,
                 message_time: datetime, control_id: str) -> AppointmentEvent:
    if not msg.count("SCH"):
        raise MissingSegmentError("no SCH segment", location="SCH")
    filler = _get(msg, mapping.filler_id)
    if not filler:
        raise MissingFieldError("no filler appointment id",
                                location=f"{mapping.filler_id.segment}-{mapping.filler_id.field}")
    patient = _patient(msg, mapping)
    found = _first(msg, mapping.start)
    start = _time(found[0], mapping, str(found[1])) if found else None
    if start is None and trigger in ("S12", "S13"):
        raise MissingFieldError("no appointment start time", location=str(mapping.start[0]))
    found_end = _first(msg, mapping.end)
    end = _time(found_end[0], mapping, str(found_end[1])) if found_end else None
    if end is None and start is not None:
        amount, units = _get(msg, mapping.duration), _get(msg, mapping.duration_units).lower()
        if amount.isdigit() and units in _DURATION_UNITS:
            end = start + timedelta(seconds=int(amount) * _DURATION_UNITS[units])
    filler_status = _get(msg, mapping.filler_status) or None
    status = APPOINTMENT_TRIGGERS[trigger]
    if status == "booked" and filler_status:
        status = _FILLER_STATUS.get(filler_status.lower(), status)
    return AppointmentEvent(
        trigger=trigger, facility=facility, filler_id=filler, placer_id=_get(msg, mapping.placer_id) or None,
        status=status, filler_status=filler_status, start=start, end=end, location=_location(msg, mapping),
        patient=patient, message_time=message_time, control_id=control_id,
    )


def _location(msg: _Segments, mapping: FacilityMapping) -> Location | None:
    """AIL-3 (PL): point of care, room and facility; PL.9 (description) when given."""
    path = mapping.location
    code = _get(msg, path, component=1)
    parts = [_get(msg, path, component=c) for c in (1, 2, 4)]
    display = _get(msg, path, component=9) or ", ".join(p for p in parts if p)
    return Location(code=code or None, display=display or None) if code or display else None


def _results(msg: _Segments, mapping: FacilityMapping, *, facility: str, message_time: datetime,
             control_id: str) -> tuple[ResultEvent, ...]:
    """One event per OBR, each with the patient of the PID that precedes it (chapter 7.3.1 groups)."""
    pid_for_obr: list[int] = []
    pids = 0
    for segment in msg.msg:
        name = str(segment[0][0])
        pids += name == "PID"
        if name == "OBR":
            pid_for_obr.append(pids)
    if not pids:
        raise MissingSegmentError("no PID segment", location="PID")
    if not pid_for_obr:
        raise MissingSegmentError("no OBR segment", location="OBR")
    events = []
    for index, pid_index in enumerate(pid_for_obr, start=1):
        filler = _get(msg, mapping.report_filler_id, index)
        if not filler:
            raise MissingFieldError("no filler order number", location=f"OBR-{mapping.report_filler_id.field}")
        result_status = _get(msg, mapping.report_status, index)
        if not result_status:
            raise MissingFieldError("no result status", location=f"OBR-{mapping.report_status.field}")
        issued_text = _get(msg, mapping.report_time, index)
        events.append(ResultEvent(
            facility=facility, filler_id=filler, placer_id=_get(msg, mapping.report_placer_id, index) or None,
            result_status=result_status, status=mapping.ready_statuses.get(result_status),
            issued=_time(issued_text, mapping, f"OBR-{mapping.report_time.field}") if issued_text else None,
            patient=_patient(msg, mapping, max(pid_index, 1)), message_time=message_time, control_id=control_id,
        ))
    return tuple(events)
