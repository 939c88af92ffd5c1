"""Hand-off to the front desk: a FHIR Task (https://hl7.org/fhir/R4/task.html) for a write a person
must finish, or for a patient's "Talk to staff"; and whether such a Task is still open.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from ehr.client import FhirClient
from ehr.errors import FhirNotFoundError
from ehr.writeback.elements import Resource, id_of

TASK_IDENTIFIER_SYSTEM = "urn:fhir-whatsapp-bridge:request"  # the request a hand-off Task answers
_TASK_DONE = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})
_REASON_RE = re.compile(r"^[a-z0-9][a-z0-9 ;:,._/-]{0,199}$")

logger = logging.getLogger(__name__)


async def create_handoff_task(fhir: FhirClient, *, patient_ref: str, focus_ref: str | None, reason: str,
                              urgent: bool, request_key: str | None, authored_on: datetime) -> str:
    """Creates a front-desk Task (status requested, intent order) and returns ``"Task/<id>"``.
    ``reason`` must be a short PHI-free code such as ``"patient-requested-cancel; write conflict"``.
    ``request_key`` identifies the request that asked for it: the Task carries it as an identifier
    and is created conditionally (``If-None-Exist``), so a retried request finds its Task instead
    of creating a second one."""
    if not _REASON_RE.match(reason):
        raise ValueError("reason must be a short lower-case code (it is stored, so never PHI)")
    task: Resource = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent" if urgent else "routine",
        "description": reason,
        "for": {"reference": patient_ref},
        "authoredOn": authored_on.isoformat(timespec="seconds"),
    }
    if focus_ref:
        task["focus"] = {"reference": focus_ref}
    condition = None
    if request_key:
        task["identifier"] = [{"system": TASK_IDENTIFIER_SYSTEM, "value": request_key}]
        condition = [("identifier", f"{TASK_IDENTIFIER_SYSTEM}|{request_key}")]
    created = await fhir.create(task, if_none_exist=condition)
    task_ref = f"Task/{created['id']}"
    logger.info("hand-off %s created (focus %s, priority %s, reason %s)", task_ref, focus_ref,
                task["priority"], reason)
    return task_ref


async def handoff_task_open(fhir: FhirClient, task_ref: str) -> bool:
    """False once the Task is completed/cancelled/failed/rejected (or gone)."""
    try:
        task = await fhir.read("Task", id_of(task_ref, "Task"))
    except FhirNotFoundError:
        return False
    return task.get("status") not in _TASK_DONE
