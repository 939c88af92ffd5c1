"""Audit records as FHIR R4 AuditEvent resources following the IHE Basic Audit Log Patterns (BALP,
https://profiles.ihe.net/ITI/BALP/).

Each :class:`~adapter.audit.trail.Kind` has one mapping (:data:`MAPPINGS`):

=================  ==========================================  ===============================
kind               AuditEvent.type / subtype                   BALP profile
=================  ==========================================  ===============================
patient-read       rest / restful-interaction#read             PatientRead
patient-query      rest / restful-interaction#search-type      PatientQuery (query entity)
patient-create     rest / restful-interaction#create           PatientCreate
patient-update     rest / restful-interaction#update           PatientUpdate
disclosure         DCM 110106 Export / iso-21089#disclose      PrivacyDisclosure.Source
resolve            rest / restful-interaction#read             PatientRead (of the Patient)
audit-access       rest / restful-interaction#search-type      Query (of AuditEvent)
login              DCM 110114 User Authentication / 110122     (DICOM; 110123 for a logout)
security-alert     DCM 110113 Security Alert                   (DICOM)
key-rotation       DCM 110113 / 110129 Security Configuration  (DICOM)
link-access        DCM 110110 Patient Record / iso-21089#access
handoff            DCM 110110 Patient Record / iso-21089#transmit
inbound, status    DCM 110107 Import / iso-21089#receive
admin              DCM 110100 Application Activity
retention          DCM 110100 / iso-21089#destroy
=================  ==========================================  ===============================

Every event also carries a subtype in :data:`KIND_SYSTEM` with our own kind, so nothing is lost in
the mapping and ``type=link-access`` finds it. The chain position travels as an entity whose
``what.identifier`` is ``{system: SEQ_SYSTEM, value: seq}`` (no extension needed), so an auditor can
match an exported record with ``bridge audit verify``. Plain dicts are built (fast enough for
100k-row exports); tests validate them with ``fhir.resources.R4B``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapter.audit.tables import AuditEvent
from adapter.audit.trail import Kind

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
REST = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
KIND_SYSTEM = "urn:x-fhir-whatsapp-bridge:audit-kind"
SEQ_SYSTEM = "urn:x-fhir-whatsapp-bridge:audit-seq"
ENTITY_SYSTEM = "urn:x-fhir-whatsapp-bridge:entity"
AGENT_SYSTEM = "urn:x-fhir-whatsapp-bridge:agent"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."


def _c(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


@dataclass(frozen=True)
class Mapping_:
    """One kind's BALP/DICOM codes."""

    type: dict[str, str]
    subtypes: tuple[dict[str, str], ...] = ()
    profile: str | None = None
    query_entity: bool = False  # BALP Query/PatientQuery: the search travels as a role-24 entity


_REST = _c(EVENT_TYPE, "rest", "RESTful Operation")
_READ = _c(REST, "read", "read")
_SEARCH = _c(REST, "search-type", "search type")
_EXPORT = _c(DCM, "110106", "Export")
_IMPORT = _c(DCM, "110107", "Import")
_RECORD = _c(DCM, "110110", "Patient Record")
_ACTIVITY = _c(DCM, "110100", "Application Activity")
_ALERT = _c(DCM, "110113", "Security Alert")
_AUTH = _c(DCM, "110114", "User Authentication")
LOGIN_SUBTYPE = _c(DCM, "110122", "Login")
LOGOUT_SUBTYPE = _c(DCM, "110123", "Logout")

MAPPINGS: dict[Kind, Mapping_] = {
    Kind.PATIENT_READ: Mapping_(_REST, (_READ,), BALP + "PatientRead"),
    Kind.PATIENT_QUERY: Mapping_(_REST, (_SEARCH,), BALP + "PatientQuery", query_entity=True),
    Kind.PATIENT_CREATE: Mapping_(_REST, (_c(REST, "create", "create"),), BALP + "PatientCreate"),
    Kind.PATIENT_UPDATE: Mapping_(_REST, (_c(REST, "update", "update"),), BALP + "PatientUpdate"),
    Kind.DISCLOSURE: Mapping_(_EXPORT, (_c(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event"),),
                              BALP + "PrivacyDisclosure.Source"),
    Kind.RESOLVE: Mapping_(_REST, (_READ,), BALP + "PatientRead"),
    Kind.AUDIT_ACCESS: Mapping_(_REST, (_SEARCH,), BALP + "Query", query_entity=True),
    Kind.LOGIN: Mapping_(_AUTH, (LOGIN_SUBTYPE,)),
    Kind.SECURITY_ALERT: Mapping_(_ALERT),
    Kind.KEY_ROTATION: Mapping_(_ALERT, (_c(DCM, "110129", "Security Configuration"),)),
    Kind.LINK_ACCESS: Mapping_(_RECORD, (_c(LIFECYCLE, "access", "Access/View Record Lifecycle Event"),)),
    Kind.HANDOFF: Mapping_(_RECORD, (_c(LIFECYCLE, "transmit", "Transmit Record Lifecycle Event"),)),
    Kind.INBOUND: Mapping_(_IMPORT, (_c(LIFECYCLE, "receive", "Receive Record Lifecycle Event"),)),
    Kind.STATUS: Mapping_(_IMPORT, (_c(LIFECYCLE, "receive", "Receive Record Lifecycle Event"),)),
    Kind.ADMIN: Mapping_(_ACTIVITY),
    Kind.RETENTION: Mapping_(_ACTIVITY, (_c(LIFECYCLE, "destroy", "Destroy Record Lifecycle Event"),)),
}
_OUTCOME_DESC = {"0": None, "4": "minor failure", "8": "serious failure", "12": "major failure"}


def kinds_for_code(code: str) -> set[str]:
    """The kinds whose type or subtype has ``code`` (or that are called ``code``): what the
    ``type``/``subtype`` search parameters match. ``code`` may be ``system|code``."""
    system, _, bare = code.rpartition("|")
    found: set[str] = {kind.value for kind in Kind if kind.value == bare}
    for kind, mapping in MAPPINGS.items():
        for coding in (mapping.type, *mapping.subtypes):
            if coding["code"] == bare and system in ("", coding["system"]):
                found.add(kind.value)
    if bare == LOGOUT_SUBTYPE["code"] and system in ("", DCM):
        found.add(Kind.LOGIN.value)
    return found


def _what(ref: str) -> dict[str, Any]:
    """A FHIR reference (``Type/id...``) as ``reference``; our own ids (``link/42``) as an identifier."""
    if ref[:1].isupper() and "/" in ref:
        return {"reference": ref}
    return {"identifier": {"system": ENTITY_SYSTEM, "value": ref}}


def _detail(event: AuditEvent) -> dict[str, Any]:
    return json.loads(event.detail) if event.detail else {}


def _agents(event: AuditEvent, kind: Kind, observer: str) -> list[dict[str, Any]]:
    actor: dict[str, Any] = {
        "who": {"identifier": {"system": AGENT_SYSTEM, "value": event.agent}, "display": event.agent},
        "requestor": True}
    if event.agent_role:
        actor["role"] = [{"text": event.agent_role}]
    if event.source:
        actor["network"] = {"address": event.source, "type": "2"}  # 2 = IP address
    agents = [actor]
    if kind is Kind.DISCLOSURE:
        # BALP PrivacyDisclosure: source and recipient agents. The recipient is the patient's
        # WhatsApp, named by the patient reference only: the number never leaves the contact book.
        agents.append({"type": {"coding": [_c(DCM, "110153", "Source Role ID")]},
                       "who": {"display": observer}, "requestor": False})
        recipient: dict[str, Any] = {"type": {"coding": [_c(DCM, "110152", "Destination Role ID")]},
                                     "who": {"display": "patient's WhatsApp"}, "requestor": False}
        if event.patient_ref:
            recipient["who"]["reference"] = event.patient_ref
        agents.append(recipient)
    return agents


def _entities(event: AuditEvent, mapping: Mapping_, seq: int | None) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if event.patient_ref:  # the BALP patient slice
        entities.append({"what": {"reference": event.patient_ref}, "type": _c(ENTITY_TYPE, "1", "Person"),
                         "role": _c(OBJECT_ROLE, "1", "Patient")})
    detail = [{"type": "detail", "valueString": event.detail}] if event.detail else []
    if event.entity_ref:
        data: dict[str, Any] = {"what": _what(event.entity_ref), "type": _c(ENTITY_TYPE, "2", "System Object"),
                                "role": _c(OBJECT_ROLE, "4", "Domain Resource")}
        if detail and not mapping.query_entity:
            data["detail"], detail = detail, []
        entities.append(data)
    if mapping.query_entity:
        # The search's parameters (PHI-free: the detail JSON) as BALP's base64 query entity.
        query = base64.b64encode((event.detail or "{}").encode()).decode("ascii")
        entities.append({"type": _c(ENTITY_TYPE, "2", "System Object"), "role": _c(OBJECT_ROLE, "24", "Query"),
                         "query": query})
    elif detail:
        entities.append({"type": _c(ENTITY_TYPE, "2", "System Object"), "description": "detail",
                         "detail": detail})
    if seq is not None:
        entities.append({"what": {"identifier": {"system": SEQ_SYSTEM, "value": str(seq)}},
                         "type": _c(ENTITY_TYPE, "4", "Other"), "description": "audit chain position"})
    return entities


def _instant(at: datetime) -> str:
    # FHIR instants need a zone; stored times are UTC even where the driver returns them naive.
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def to_audit_event(event: AuditEvent, seq: int | None, *, source_observer: str) -> dict[str, Any]:
    """One ``audit_event`` row as a BALP-shaped R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html)."""
    kind = Kind(event.kind)
    mapping = MAPPINGS[kind]
    subtypes = list(mapping.subtypes)
    if kind is Kind.LOGIN and _detail(event).get("op") == "logout":
        subtypes = [LOGOUT_SUBTYPE]
    subtypes.append({"system": KIND_SYSTEM, "code": kind.value})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"bridge-{event.id}",
        "type": mapping.type,
        "subtype": subtypes,
        "action": event.action,
        "recorded": _instant(event.recorded_at),
        "outcome": event.outcome,
        "agent": _agents(event, kind, source_observer),
        "source": {"observer": {"display": source_observer}, "type": [_c(SOURCE_TYPE, "4", "Application Server")]},
    }
    if mapping.profile:
        resource["meta"] = {"profile": [mapping.profile]}
    if _OUTCOME_DESC.get(event.outcome):
        resource["outcomeDesc"] = _OUTCOME_DESC[event.outcome]
    if event.purpose:
        resource["purposeOfEvent"] = [{"text": event.purpose}]
    entities = _entities(event, mapping, seq)
    if entities:
        resource["entity"] = entities
    return resource


def to_bundle(events: Sequence[Mapping[str, Any]], total: int, links: Mapping[str, str]) -> dict[str, Any]:
    """A FHIR searchset Bundle (https://hl7.org/fhir/R4/bundle.html) with ``self``/``next``/... links."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": relation, "url": url} for relation, url in links.items()],
        "entry": [{"resource": dict(resource), "search": {"mode": "match"}} for resource in events],
    }
