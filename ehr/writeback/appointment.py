"""The Appointment rules a tap is guarded and decided by (https://hl7.org/fhir/R4/appointment.html):
which participants are the patient, whether the booking can still change, what of it the patient's
message was about, and the JSON Patch ``add`` operations a tap writes.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from ehr.writeback.elements import Resource, as_list, instant, same_ref, slot_refs
from ehr.writeback.outcome import WriteOutcome

Action = Literal["confirm", "cancel", "reschedule"]

CANCELLATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
# Display from the R4 code system (https://terminology.hl7.org/CodeSystem-appointment-cancellation-reason.html).
PATIENT_CANCELLED_VIA_REMINDER = {"system": CANCELLATION_SYSTEM, "code": "pat-crs",
                                  "display": "Patient: Canceled via automated reminder system"}
ERROR_CANCELLATION = {"system": CANCELLATION_SYSTEM, "code": "oth-err", "display": "Other: Error"}
# Statuses after which a patient tap can no longer change the booking.
_CLOSED = frozenset({"fulfilled", "noshow", "entered-in-error", "arrived", "checked-in"})


def patient_cancel_ops() -> list[dict[str, Any]]:
    """``status=cancelled`` with ``cancelationReason`` pat-crs, as JSON Patch operations."""
    return [
        {"op": "add", "path": "/status", "value": "cancelled"},
        {"op": "add", "path": "/cancelationReason", "value": {"coding": [PATIENT_CANCELLED_VIA_REMINDER]}},
    ]


def closed_or_past(current: Resource, action: Action, now: datetime) -> WriteOutcome | None:
    """``not_allowed`` when the booking is closed (or cancelled, for a confirm) or already started."""
    status = current.get("status")
    if status in _CLOSED or (action == "confirm" and status == "cancelled"):
        return WriteOutcome("not_allowed", current, detail=f"status={status}")
    start = instant(current.get("start"))
    if start is not None and start <= now:
        return WriteOutcome("not_allowed", current, detail="start in the past")
    return None


def material(appointment: Resource) -> tuple[Any, ...]:
    """What a patient's tap was about: status, start, end, slot (not comments, not participants)."""
    return (appointment.get("status"), instant(appointment.get("start")), instant(appointment.get("end")),
            tuple(sorted(slot_refs(appointment))))


def participant_indexes(appointment: Resource, patient_ref: str) -> list[int]:
    return [i for i, p in enumerate(as_list(appointment.get("participant")))
            if isinstance(p, dict) and same_ref(p.get("actor"), patient_ref)]


def others_accepted(appointment: Resource, patient_indexes: list[int]) -> bool:
    """Every other *required* participant (``required`` absent means required) has accepted."""
    return all(p.get("status") == "accepted" for i, p in enumerate(as_list(appointment.get("participant")))
               if isinstance(p, dict) and i not in patient_indexes
               and p.get("required", "required") == "required")


def apply_adds(resource: Resource, ops: list[dict[str, Any]]) -> Resource:
    """Applies our own ``add`` operations (object members and existing list items) to a copy: the
    body of a PUT where the server offers no JSON Patch."""
    result = copy.deepcopy(resource)
    for op in ops:
        if op["op"] != "add":
            raise ValueError("only 'add' operations are applied locally")
        *parents, last = op["path"].lstrip("/").split("/")
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = copy.deepcopy(op["value"])
        else:
            target[last] = copy.deepcopy(op["value"])
    return result
