"""The FHIR-shaped resources the decide step reads for an HL7 v2 event, and the ids they go by.

:mod:`ehr.hl7.mapping` gives Appointment and DiagnosticReport dicts that name the patient by
identifier only (HL7's v2-to-FHIR mapping, https://build.fhir.org/ig/HL7/v2-to-fhir/). The decide
step keys its state by ``resourceType/id`` and its version by ``meta.versionId`` and finds the
patient by reference (:func:`ehr.patient.patient_reference`), so this module adds:

- ``id``: ``hl7-`` and a digest of (sending facility, filler id): stable for every message about one
  appointment or report, within FHIR's id syntax (https://hl7.org/fhir/R4/datatypes.html#id), and
  never confused with an id the EHR's FHIR server gives;
- ``meta.versionId``: the ``hl7_message`` row id, which grows with every message received;
- the patient's reference: ``Patient/<id>`` where the id is the FHIR Patient's when it was found by
  identifier, else the MRN (PID-3) itself, which is what staff opt a patient in under.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from ehr.hl7.config import Hl7Config
from ehr.hl7.events import AppointmentEvent, ParsedMessage, PatientRef, ResultEvent
from ehr.hl7.mapping import appointment_resource, diagnostic_report_resource, patient_resource

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def resource_id(facility: str, filler_id: str, kind: str) -> str:
    """``hl7-`` + 32 hex digits of SHA-256 over (kind, facility, filler id): one id per appointment/report."""
    digest = hashlib.sha256("\x1f".join((kind, facility, filler_id)).encode("utf-8")).hexdigest()
    return f"hl7-{digest[:32]}"


def appointment_id(facility: str, filler_id: str) -> str:
    return resource_id(facility, filler_id, "Appointment")


def mrn_patient_id(patient: PatientRef) -> str:
    """The MRN as a FHIR id when it is one; else a digest of it (an MRN with spaces or slashes)."""
    if _FHIR_ID.match(patient.identifier):
        return patient.identifier
    return "mrn-" + hashlib.sha256(patient.identifier.encode("utf-8")).hexdigest()[:32]


def message_patient(patient: PatientRef) -> dict[str, Any]:
    """The Patient the message itself describes (PID-3, PID-13, PID-15), under its MRN id."""
    return {**patient_resource(patient), "id": mrn_patient_id(patient)}


def decide_resource(event: AppointmentEvent | ResultEvent, config: Hl7Config, message_id: int,
                    patient_id: str) -> dict[str, Any]:
    """The Appointment or DiagnosticReport of ``event`` as the decide step reads it."""
    mapping = config.for_facility(event.facility)
    if isinstance(event, AppointmentEvent):
        resource = appointment_resource(event, mapping)
        resource["id"] = appointment_id(event.facility, event.filler_id)
        for participant in resource["participant"]:
            if participant["actor"].get("type") == "Patient":
                participant["actor"]["reference"] = f"Patient/{patient_id}"
    else:
        resource = diagnostic_report_resource(event, mapping)
        resource["id"] = resource_id(event.facility, event.filler_id, "DiagnosticReport")
        resource["subject"]["reference"] = f"Patient/{patient_id}"
    resource["meta"] = {**copy.deepcopy(resource.get("meta") or {}), "versionId": str(message_id)}
    return resource


def receipt_refs(message: ParsedMessage) -> list[tuple[str, PatientRef]]:
    """``Type/id`` of each resource a message is about, with its patient (for the receipt's audit)."""
    refs = []
    for event in message.events:
        kind = "Appointment" if isinstance(event, AppointmentEvent) else "DiagnosticReport"
        refs.append((f"{kind}/{resource_id(event.facility, event.filler_id, kind)}", event.patient))
    return refs
