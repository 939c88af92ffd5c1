"""What the decide step needs from a Patient: where to message them, in which language, and who they are.

- :func:`mobile_number` reads ``Patient.telecom`` (ContactPoint, https://hl7.org/fhir/R4/datatypes.html#ContactPoint)
  and returns an E.164 number WhatsApp can reach, or a typed reason why there is none.
- :func:`preferred_language` reads ``Patient.communication`` (https://hl7.org/fhir/R4/patient-definitions.html#Patient.communication,
  BCP-47 codes per https://hl7.org/fhir/R4/valueset-languages.html) and picks a template language.
- :func:`patient_reference` finds the patient of an Appointment (``participant.actor``,
  https://hl7.org/fhir/R4/appointment.html) or a DiagnosticReport (``subject``, https://hl7.org/fhir/R4/diagnosticreport.html).

Plain dicts in, no validation models: these run for every event (DESIGN.md, "keep the hot path light").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

# Types WhatsApp can plausibly reach when the EHR says nothing about the number's use.
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# Types that are certainly not a handset, even when the EHR labels the number "mobile".
_NEVER_MOBILE = frozenset({PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE, PhoneNumberType.PREMIUM_RATE,
                           PhoneNumberType.SHARED_COST, PhoneNumberType.UAN, PhoneNumberType.VOICEMAIL,
                           PhoneNumberType.PAGER})
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_PATIENT_REF = re.compile(r"(?:^|/)(Patient/[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


class NoMobileReason(StrEnum):
    """Why a patient cannot be messaged; staff act on it, so each names a different fix."""

    NO_PHONE = "no_phone"  # no telecom with system phone/sms at all
    NO_CURRENT_PHONE = "no_current_phone"  # only numbers marked old or with an ended period
    INVALID_NUMBER = "invalid_number"  # numbers present but none is a valid number in any plan we know
    NOT_MOBILE = "not_mobile"  # valid numbers, but none is (or may be) a mobile


@dataclass(frozen=True)
class ContactResult:
    """Either ``e164`` (``+12015550123``, with the ContactPoint ``use`` it came from) or ``reason``."""

    e164: str | None = None
    reason: NoMobileReason | None = None
    use: str | None = None

    def __post_init__(self) -> None:
        if (self.e164 is None) == (self.reason is None):
            raise ValueError("a ContactResult holds either a number or a reason, not both or neither")

    @classmethod
    def found(cls, e164: str, use: str | None = None) -> ContactResult:
        return cls(e164=e164, use=use)

    @classmethod
    def missing(cls, reason: NoMobileReason) -> ContactResult:
        return cls(reason=reason)

    @property
    def ok(self) -> bool:
        return self.e164 is not None


def mobile_number(patient: Mapping[str, Any], default_region: str, *, today: date | None = None) -> ContactResult:
    """The patient's WhatsApp-reachable number, or why there is none.

    Candidates are ``telecom`` entries with system ``phone`` or ``sms`` (an entry without a system
    is not known to be a phone), not ``use=old`` and not outside their ``period`` on ``today``.
    Order: ``use=mobile``, then ``system=sms``, then the rest; within each, lower ``rank`` first, then
    document order. A number labelled mobile/sms is taken unless its numbering plan says it is
    certainly not a handset (a fixed line, toll-free, …); any other number is taken only if the plan
    says MOBILE or FIXED_LINE_OR_MOBILE. Numbers without ``+`` are read in ``default_region``.
    """
    today = today or date.today()
    telecom = [t for t in patient.get("telecom") or [] if isinstance(t, dict)]
    phones = [t for t in telecom if t.get("system") in ("phone", "sms") and isinstance(t.get("value"), str)
              and t["value"].strip()]
    if not phones:
        return ContactResult.missing(NoMobileReason.NO_PHONE)
    current = [t for t in phones if t.get("use") != "old" and _in_period(t.get("period"), today)]
    if not current:
        return ContactResult.missing(NoMobileReason.NO_CURRENT_PHONE)
    ordered = sorted(enumerate(current), key=lambda item: (_preference(item[1]), _rank(item[1]), item[0]))
    any_valid = False
    for _, point in ordered:
        try:
            number = phonenumbers.parse(point["value"], default_region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(number):
            continue
        any_valid = True
        kind = phonenumbers.number_type(number)
        declared_mobile = point.get("use") == "mobile" or point.get("system") == "sms"
        if kind in _MOBILE_TYPES or (declared_mobile and kind not in _NEVER_MOBILE):
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            return ContactResult.found(e164, point.get("use"))
    return ContactResult.missing(NoMobileReason.NOT_MOBILE if any_valid else NoMobileReason.INVALID_NUMBER)


def preferred_language(patient: Mapping[str, Any], available: Sequence[str], fallback: str) -> str:
    """The template language for the patient: ``preferred=true`` communications first, then the rest
    in order; for each, an exact match (``es-MX`` ↔ ``es_MX``), else the same base language
    (``es-MX`` → ``es``, ``en`` → ``en_US``; a bare base code wins, then ``available``'s order);
    ``fallback`` when nothing matches. Codes that are not language tags (``"1"``) are skipped."""
    communications = [c for c in patient.get("communication") or [] if isinstance(c, dict)]
    ordered = [c for c in communications if c.get("preferred") is True]
    ordered += [c for c in communications if c.get("preferred") is not True]
    by_key = {_key(code): code for code in available}
    for communication in ordered:
        language = communication.get("language")
        codings = language.get("coding") if isinstance(language, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            code = coding.get("code") if isinstance(coding, dict) else None
            if not isinstance(code, str) or not _LANGUAGE_TAG.match(code):
                continue
            if _key(code) in by_key:
                return by_key[_key(code)]
            base = _key(code).split("-")[0]
            if base in by_key:
                return by_key[base]
            same_base = [code for key, code in by_key.items() if key.split("-")[0] == base]
            if same_base:
                return same_base[0]
    return fallback


def patient_reference(resource: Mapping[str, Any]) -> str | None:
    """``Patient/{id}`` of an Appointment's patient participant or a DiagnosticReport's subject.

    A reference counts when its literal form names a Patient (relative, absolute or versioned) or its
    ``type`` is ``Patient``; a typeless ``urn:uuid:`` reference is not assumed to be one (a report's
    subject may be a Group, Device or Location). Versioned and absolute forms are reduced to
    ``Patient/{id}``; a typed logical reference is returned as written.
    """
    if resource.get("resourceType") == "Appointment":
        participants = [p for p in resource.get("participant") or [] if isinstance(p, dict)]
        candidates = [p.get("actor") for p in participants]
    elif resource.get("resourceType") in ("DiagnosticReport", "DocumentReference", "Invoice"):
        candidates = [resource.get("subject")]
    else:
        return None
    for candidate in candidates:
        if not isinstance(candidate, dict) or not isinstance(candidate.get("reference"), str):
            continue
        match = _PATIENT_REF.search(candidate["reference"])
        if match:
            return match.group(1)
        if candidate.get("type") == "Patient":
            return str(candidate["reference"])
    return None


def _preference(point: Mapping[str, Any]) -> int:
    if point.get("use") == "mobile":
        return 0
    return 1 if point.get("system") == "sms" else 2


def _rank(point: Mapping[str, Any]) -> int:
    rank = point.get("rank")
    return rank if isinstance(rank, int) and rank > 0 else 1 << 30  # unranked after every ranked entry


def _key(code: str) -> str:
    return code.replace("_", "-").casefold()


def _in_period(period: Any, today: date) -> bool:
    """False when ``period.end`` is before today or ``period.start`` after it; partial dates
    (``2014``, ``2014-06``) count to the end (or from the start) of what they name."""
    if not isinstance(period, dict):
        return True
    end = _partial_date(period.get("end"), last=True)
    start = _partial_date(period.get("start"), last=False)
    return not ((end is not None and end < today) or (start is not None and start > today))


def _partial_date(value: Any, *, last: bool) -> date | None:
    if not isinstance(value, str):
        return None
    match = re.match(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", value)
    if not match:
        return None
    year = int(match[1])
    month = int(match[2]) if match[2] else (12 if last else 1)
    if match[3]:
        day = int(match[3])
    elif last:
        day = 31 if month == 12 else (date(year, month + 1, 1) - date(year, month, 1)).days
    else:
        day = 1
    try:
        return date(year, month, day)
    except ValueError:
        return None
