"""Audit entries for the service's own FHIR traffic about patients: reads, searches, write-backs.

The BALP profiles they export to (IHE Basic Audit Log Patterns, sections 3.x): a read of one
resource is ``patient-read`` (PatientRead), a search ``patient-query`` (PatientQuery), a created
resource ``patient-create`` (PatientCreate), a changed one ``patient-update`` (PatientUpdate).

- Entities are versioned references (``Appointment/7/_history/3``) when the version is known, so
  an auditor can fetch exactly what was read or written (FHIR R4 http.html#vread).
- A search records its resource type and its parameter NAMES only: values such as a patient
  reference or a date may identify a patient and are not needed to say what kind of search it was.
- Write-backs happen because a patient tapped a button on WhatsApp: the agent is ``patient``
  (who asked), the service is the system that performed the FHIR call (``performer`` in detail,
  and the BALP ``source`` observer on export). Failures carry the error class, never a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome

PATIENT_AGENT = "patient"  # write-backs: the patient asked (via WhatsApp); the service performed them
_VIA = {"via": "whatsapp", "performer": "system"}
# Why a write became a hand-off (ehr.writeback) -> the error class an auditor can count on.
_HANDOFF_ERRORS = {"write conflict": "FhirConflictError", "ehr locked": "FhirError:423",
                   "ehr dependency failed": "FhirError:424", "no version id": "NoVersionId",
                   "reschedule incomplete; two bookings": "FhirError"}
_SLOT_SEARCH = ("schedule", "status", "start", "_sort", "_count")  # ehr.writeback.slots.search_free


def versioned_ref(resource: dict[str, Any] | None, fallback: str | None = None) -> str | None:
    """``Type/id/_history/v`` of a resource as read, ``Type/id`` without a version, else ``fallback``."""
    if not resource or not resource.get("resourceType") or not resource.get("id"):
        return fallback
    ref = f"{resource['resourceType']}/{resource['id']}"
    version = (resource.get("meta") or {}).get("versionId")
    return f"{ref}/_history/{version}" if version is not None else ref


def read_entry(resource: dict[str, Any], *, patient_ref: str | None, step: str, agent: str = "system",
               detail: dict[str, Any] | None = None) -> AuditEntry:
    """One FHIR read (BALP PatientRead) of ``resource`` about ``patient_ref``."""
    return AuditEntry(kind=Kind.PATIENT_READ, action=Action.READ, agent=agent, patient_ref=patient_ref,
                      entity_ref=versioned_ref(resource), detail={"step": step, **(detail or {})})


def not_found_entry(reference: str, *, patient_ref: str | None, step: str) -> AuditEntry:
    """A read that found nothing (404/410): outcome 4, the reference as asked for."""
    return AuditEntry(kind=Kind.PATIENT_READ, action=Action.READ, outcome=Outcome.MINOR_FAILURE,
                      patient_ref=patient_ref, entity_ref=reference, detail={"step": step, "error": "not_found"})


def query_entry(resource_type: str, params: Iterable[tuple[str, str]] | Iterable[str], *,
                patient_ref: str | None = None, step: str, agent: str = "system", results: int | None = None,
                outcome: Outcome = Outcome.SUCCESS) -> AuditEntry:
    """One FHIR search (BALP PatientQuery): the type and the sorted parameter names, never values."""
    names = sorted({item if isinstance(item, str) else item[0] for item in params})
    detail: dict[str, Any] = {"step": step, "type": resource_type, "params": ",".join(names)[:120]}
    if results is not None:
        detail["results"] = results
    return AuditEntry(kind=Kind.PATIENT_QUERY, action=Action.EXECUTE, outcome=outcome, agent=agent,
                      patient_ref=patient_ref, entity_ref=resource_type, detail=detail)


def writeback_entries(request_kind: str, *, appointment_ref: str | None, patient_ref: str, write: Any,
                      task_ref: str | None) -> list[AuditEntry]:
    """The entries of one performed action request (:mod:`adapter.conversation.actions`): ``write`` is the
    :class:`ehr.writeback.WriteOutcome` (None for hand-off requests), ``task_ref`` a Task created."""
    entries: list[AuditEntry] = []
    detail = {"request": request_kind, **_VIA}

    def add(kind: Kind, action: Action, entity: str | None, outcome: Outcome = Outcome.SUCCESS, **extra: Any) -> None:
        entries.append(AuditEntry(kind=kind, action=action, outcome=outcome, agent=PATIENT_AGENT,
                                  patient_ref=patient_ref, entity_ref=entity, detail={**detail, **extra}))

    if write is not None:
        current = versioned_ref(write.appointment, appointment_ref)
        if write.kind in ("confirmed", "cancelled") and write.detail.startswith("AppointmentResponse/"):
            add(Kind.PATIENT_CREATE, Action.CREATE, write.detail.split()[0], result=write.kind)
        elif write.kind in ("confirmed", "cancelled"):
            add(Kind.PATIENT_UPDATE, Action.UPDATE, current, result=write.kind)
        elif write.kind == "rescheduled":  # a new booking created, the old one cancelled
            add(Kind.PATIENT_CREATE, Action.CREATE, current, result=write.kind)
            add(Kind.PATIENT_UPDATE, Action.UPDATE, appointment_ref, result="cancelled")
        elif write.kind == "stale":  # the appointment changed since the message: nothing written
            add(Kind.PATIENT_UPDATE, Action.UPDATE, current, Outcome.MINOR_FAILURE, error="StaleVersion")
        elif write.kind == "handoff":  # the EHR refused or kept conflicting: a person finishes it
            why = write.detail.partition("; ")[2]
            add(Kind.PATIENT_UPDATE, Action.UPDATE, current, Outcome.SERIOUS_FAILURE,
                error=_HANDOFF_ERRORS.get(why, "FhirError"))
        else:  # already, not_allowed, slots, no_slots: read (and searched), nothing written
            add(Kind.PATIENT_READ, Action.READ, current, result=write.kind)
            if write.kind == "slots" or (write.kind == "no_slots" and " on " in write.detail):
                entries.append(query_entry("Slot", _SLOT_SEARCH, patient_ref=patient_ref, step=request_kind,
                                           agent=PATIENT_AGENT, results=len(write.slots)))
    if task_ref:
        add(Kind.PATIENT_CREATE, Action.CREATE, task_ref, result="handoff")
    return entries


def failed_request_entry(request_kind: str, *, appointment_ref: str | None, patient_ref: str, error: str,
                         attempt: int, final: bool) -> AuditEntry:
    """An action request whose EHR call failed (unreachable, 5xx, refused): outcome 4 while it will be
    tried again, 8 when it was given up. ``error`` is the exception's class name."""
    kind, action = _REQUEST_KINDS.get(request_kind, (Kind.PATIENT_UPDATE, Action.UPDATE))
    return AuditEntry(kind=kind, action=action, outcome=Outcome.SERIOUS_FAILURE if final else Outcome.MINOR_FAILURE,
                      agent=PATIENT_AGENT, patient_ref=patient_ref, entity_ref=appointment_ref,
                      detail={"request": request_kind, **_VIA, "error": error[:64], "attempt": attempt,
                              "final": final})


_REQUEST_KINDS: dict[str, tuple[Kind, Action]] = {
    "confirm": (Kind.PATIENT_UPDATE, Action.UPDATE), "cancel": (Kind.PATIENT_UPDATE, Action.UPDATE),
    "reschedule_pick": (Kind.PATIENT_UPDATE, Action.UPDATE), "handoff": (Kind.PATIENT_CREATE, Action.CREATE),
    "reschedule_offer": (Kind.PATIENT_QUERY, Action.EXECUTE), "handoff_check": (Kind.PATIENT_READ, Action.READ),
}


def decide_reads(resource: dict[str, Any], patient: dict[str, Any] | None, patient_ref: str | None,
                 patient_wanted: bool) -> Sequence[AuditEntry]:
    """What the decide step read (:mod:`adapter.scheduling.decide`): the resource, re-read by id, and its Patient
    when a rule needed it (``patient_wanted``) — a Patient that was not found is recorded too."""
    entries = [read_entry(resource, patient_ref=patient_ref, step="decide")]
    if patient is not None:
        entries.append(read_entry(patient, patient_ref=patient_ref, step="decide"))
    elif patient_wanted and patient_ref:
        entries.append(not_found_entry(patient_ref, patient_ref=patient_ref, step="decide"))
    return entries
