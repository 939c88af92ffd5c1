"""Routing a patient to a department (:mod:`mappings.knowledge`: departments with an owner, opening
hours in their time zone and the usual wait).

Choosing a department from the menu's list queues the request the way "talk to staff" does — a
hand-off :class:`~adapter.conversation.tables.ActionRequest` (the department in ``slot_ref`` as
``department:<id>``) that the action runner turns into a FHIR Task whose ``owner`` is the department
(https://hl7.org/fhir/R4/task.html: ``Task.owner``, "responsible individual"; a department is an
``Organization``, ``HealthcareService`` or ``CareTeam``), and the bot stays silent while staff have the
conversation. The patient is told what to expect: while the department is open, its usual wait;
outside its hours, when someone will answer (:func:`when_text`, the rule the front desk's "talk to
staff" uses too: later today before closing, else the next working day after opening).
"""

from __future__ import annotations

from datetime import datetime

from adapter.conversation.chat import start_handoff
from adapter.conversation.front_desk import DEPARTMENT_ROW
from adapter.conversation.turn import Turn
from adapter.storage.db import utcnow
from ehr.client import FhirClient
from ehr.writeback.handoff import TASK_IDENTIFIER_SYSTEM
from mappings.conversation import Conversation as Texts
from mappings.kinds import local_time_text
from mappings.knowledge import Department, Hours
from whatsapp.interactive import list_message

REASON = "patient-asked-for-department"


def departments(turn: Turn) -> str:
    """The "departments" row of the menu: the departments as a list (at most ten)."""
    desk = turn.replies.front_desk
    rows: list[tuple[str, str, str | None]] = [
        (f"{DEPARTMENT_ROW}{d.id}", d.name(turn.language, turn.default_language), None)
        for d in desk.base.departments[:10]]
    if not rows:
        turn.menu()
        return "menu"
    texts, language, default = turn.texts, turn.language, turn.default_language
    turn.send(list_message(texts.render("departments_prompt", language, default)[0],
                           texts.render("departments_button", language, default)[0], rows))
    return "departments"


def chosen(turn: Turn, department_id: str) -> str:
    """A department's row: the hand-off to it is queued, and the patient told when to expect an answer."""
    department = turn.replies.front_desk.base.department(department_id)
    if department is None:  # a row of an older list, for a department since removed
        turn.menu()
        return "menu"
    patient = turn.patients[0]
    turn.request("handoff", patient, slot_ref=f"{DEPARTMENT_ROW}{department.id}", reason=REASON)
    start_handoff(turn.session, turn.conversation, None, turn.policy.handoff_timeout, patient_ref=patient,
                  agent="patient", reason=REASON)
    name = department.name(turn.language, turn.default_language)
    now = utcnow()
    if department.hours.is_open(now):
        turn.say("queued_open", department=name, wait=wait_text(turn.texts, turn.language, turn.default_language,
                                                                 department.wait_minutes))
        return "department_open"
    turn.say("queued_closed", department=name, when=when_text(turn.texts, turn.language, turn.default_language,
                                                              department.hours, now))
    return "department_closed"


def when_text(texts: Texts, language: str, default_language: str, hours: Hours, now: datetime) -> str:
    """When someone will answer, in words: "today before 5:00 PM", "on the next working day after 8:00 AM"."""
    kind, moment = hours.reply_by(now)
    key = "when_today" if kind == "today" else "when_next_day"
    return texts.render(key, language, default_language, time=local_time_text(moment, language))[0]


def wait_text(texts: Texts, language: str, default_language: str, minutes: int) -> str:
    if minutes < 120:
        return texts.render("wait_minutes", language, default_language, count=str(minutes))[0]
    return texts.render("wait_hours", language, default_language, count=str(round(minutes / 60)))[0]


def department_of(slot_ref: str | None, departments: tuple[Department, ...]) -> Department | None:
    """The department a hand-off request was for (``department:<id>`` in its ``slot_ref``)."""
    if not slot_ref or not slot_ref.startswith(DEPARTMENT_ROW):
        return None
    wanted = slot_ref.removeprefix(DEPARTMENT_ROW)
    return next((d for d in departments if d.id == wanted), None)


async def department_task(fhir: FhirClient, *, patient_ref: str, department: Department, request_key: str,
                          authored_on: datetime) -> str:
    """The queue item: a Task (status requested, intent order) owned by the department, created once per
    request (conditional create on the request's identifier, as :mod:`ehr.writeback.handoff` does);
    returns ``"Task/<id>"``. Its description is a code: the department's id, never the patient's words."""
    task = {
        "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
        "description": f"{REASON}; {department.id}", "for": {"reference": patient_ref},
        "owner": {"reference": department.owner, "display": department.names.get("en_US", department.id)},
        "authoredOn": authored_on.isoformat(timespec="seconds"),
        "identifier": [{"system": TASK_IDENTIFIER_SYSTEM, "value": request_key}],
    }
    created = await fhir.create(task, if_none_exist=[("identifier", f"{TASK_IDENTIFIER_SYSTEM}|{request_key}")])
    return f"Task/{created['id']}"
