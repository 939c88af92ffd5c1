"""Turns HL7 v2 events into FHIR R4-shaped dicts, so the decide path reads them like FHIR events.

Follows HL7's v2-to-FHIR mapping (https://build.fhir.org/ig/HL7/v2-to-fhir/): SCH-2 becomes
``Appointment.identifier`` (https://hl7.org/fhir/R4/appointment.html), OBR-3 becomes
``DiagnosticReport.identifier`` (https://hl7.org/fhir/R4/diagnosticreport.html), PID-3 the patient's
identifier, XTN a ContactPoint (https://hl7.org/fhir/R4/datatypes.html#ContactPoint) and PID-15 a
``Patient.communication``. Nothing of an OBX is mapped: a DiagnosticReport here has no ``result``,
``conclusion`` or ``presentedForm``, and its ``code`` is a constant that names no test.

The patient is a logical reference (``identifier`` only): the wiring resolves it against the FHIR
Patient or its own records; :func:`patient_resource` gives a Patient dict that
``ehr.patient.mobile_number`` and ``preferred_language`` read unchanged.
"""

from __future__ import annotations

from typing import Any

from ehr.hl7.config import FacilityMapping
from ehr.hl7.events import AppointmentEvent, PatientRef, ResultEvent

# ISO 639-2 (three-letter, as many v2 senders code PID-15) -> the BCP-47 primary tags templates use.
_ISO_639_2 = {"eng": "en", "spa": "es", "zho": "zh", "chi": "zh", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de",
              "por": "pt", "vie": "vi", "kor": "ko", "rus": "ru", "ara": "ar", "hin": "hi", "tgl": "tl", "ita": "it",
              "jpn": "ja", "pol": "pl", "hat": "ht", "fas": "fa", "per": "fa", "urd": "ur", "ben": "bn"}
# XTN.2 (table 0201) and XTN.3 (table 0202) -> ContactPoint.use, per the v2-to-FHIR XTN map.
_CONTACT_USE = {"CP": "mobile", "PRN": "home", "ORN": "home", "VHN": "temp", "WPN": "work", "PRS": "mobile"}
_REPORT_CODE = {"text": "Report received over HL7 v2 (ORU^R01)"}


def identifier_system(facility: str, kind: str, mapping: FacilityMapping) -> str:
    """The identifier system of a filler id: configured, else a URN naming the facility and id kind."""
    if mapping.identifier_system:
        return mapping.identifier_system
    return f"urn:hl7v2:{_urn_part(facility)}:{kind}"


def patient_identifier(patient: PatientRef) -> dict[str, Any]:
    """PID-3 as a FHIR Identifier; the system is the assigning authority's OID when it has one."""
    if patient.assigner_oid:
        system = f"urn:oid:{patient.assigner_oid}"
    else:
        system = f"urn:hl7v2:assigner:{_urn_part(patient.assigner or 'unknown')}"
    identifier: dict[str, Any] = {"system": system, "value": patient.identifier}
    if patient.identifier_type:
        identifier["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                          "code": patient.identifier_type}]}
    return identifier


def language_tag(code: str | None) -> str | None:
    """PID-15.1 as a BCP-47 tag: ISO 639-1 kept, ISO 639-2 translated, anything else passed lower-cased."""
    if not code:
        return None
    lowered = code.strip().lower().replace("_", "-")
    return _ISO_639_2.get(lowered, lowered)


def patient_resource(patient: PatientRef) -> dict[str, Any]:
    """A Patient with the identifier, the chosen phone and the language; what ehr/patient.py reads."""
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": [patient_identifier(patient)]}
    if patient.phone:
        telecom: dict[str, Any] = {"system": "phone", "value": patient.phone}
        use = _CONTACT_USE.get(patient.phone_use or "")
        if use:
            telecom["use"] = use
        resource["telecom"] = [telecom]
    tag = language_tag(patient.language)
    if tag:
        resource["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": tag}]},
                                      "preferred": True}]
    return resource


def appointment_resource(event: AppointmentEvent, mapping: FacilityMapping) -> dict[str, Any]:
    """The Appointment the SIU message describes; ``identifier[0]`` is the filler id (SCH-2)."""
    identifiers = [{"system": identifier_system(event.facility, "filler-appointment", mapping),
                    "value": event.filler_id, "type": {"text": "filler appointment id"}}]
    if event.placer_id:
        identifiers.append({"system": identifier_system(event.facility, "placer-appointment", mapping),
                            "value": event.placer_id, "type": {"text": "placer appointment id"}})
    participants: list[dict[str, Any]] = [{
        "actor": {"type": "Patient", "identifier": patient_identifier(event.patient)},
        # R4: a booked appointment has every participant accepted; a cancellation by the clinic is not
        # the patient declining, so only not-yet-booked statuses leave the patient's answer open.
        "status": "needs-action" if event.status in ("pending", "proposed", "waitlist") else "accepted",
    }]
    if event.location is not None:
        actor: dict[str, Any] = {"type": "Location"}
        if event.location.code:
            actor["identifier"] = {"system": identifier_system(event.facility, "location", mapping),
                                   "value": event.location.code}
        if event.location.display:
            actor["display"] = event.location.display
        participants.append({"actor": actor, "status": "accepted"})
    resource: dict[str, Any] = {"resourceType": "Appointment", "identifier": identifiers,
                                "status": event.status, "participant": participants}
    if event.start is not None:
        resource["start"] = event.start.isoformat()
    if event.end is not None:
        resource["end"] = event.end.isoformat()
    resource["meta"] = {"lastUpdated": event.message_time.isoformat(),
                        "tag": [{"system": "urn:hl7v2:trigger", "code": f"SIU^{event.trigger}"}]}
    return resource


def diagnostic_report_resource(event: ResultEvent, mapping: FacilityMapping) -> dict[str, Any]:
    """The DiagnosticReport of one OBR: identifier (OBR-3) and status only; never a result value.

    Only "ready" statuses have a FHIR status here; any other OBR-25 maps to ``registered`` so the
    decide rules (which fire on final/amended/corrected/appended) ignore it.
    """
    identifiers = [{"system": identifier_system(event.facility, "filler-order", mapping), "value": event.filler_id}]
    if event.placer_id:
        identifiers.append({"system": identifier_system(event.facility, "placer-order", mapping),
                            "value": event.placer_id})
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "identifier": identifiers, "status": event.status or "registered",
        "code": dict(_REPORT_CODE), "subject": {"type": "Patient", "identifier": patient_identifier(event.patient)},
        "meta": {"lastUpdated": event.message_time.isoformat(),
                 "tag": [{"system": "urn:hl7v2:result-status", "code": event.result_status}]},
    }
    if event.issued is not None:
        resource["issued"] = event.issued.isoformat()
    return resource


def _urn_part(text: str) -> str:
    # RFC 8141 NSS characters; anything else (spaces in "GH Clinic") is percent-free replaced.
    return "".join(c if c.isalnum() or c in "-._~" else "-" for c in text.strip()) or "unknown"
