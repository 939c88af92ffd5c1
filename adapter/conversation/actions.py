"""Carrying out what patients' taps asked of the EHR, after their message was processed.

An :class:`~adapter.conversation.tables.ActionRequest` is claimed (leased, so a crash retries it), performed with
:class:`ehr.writeback.AppointmentWriter` — ``If-Match`` on every write, conflicts re-read and
retried, a front-desk Task when that fails — and answered in the same transaction that closes it.
While the EHR is unreachable the request waits and is tried again with backoff; after
``MAX_ATTEMPTS`` it fails visibly (an operator alert) and the patient is told the clinic will call.

Each outcome is audited in the transaction that records it (:mod:`adapter.audit.fhir_access`):
``patient-update`` / ``patient-create`` for what was written, ``patient-read`` / ``patient-query``
for what was only read, and every failed attempt with its error class (outcome 4, 8 when given up).
The agent is ``patient`` (who tapped); the service performed the FHIR calls.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.fhir_access import failed_request_entry, writeback_entries
from adapter.audit.trail import AuditEntry
from adapter.audit.trail import record as audit
from adapter.conversation import appointments, routing
from adapter.conversation.chat import ChatReplies, conversation_of, end_handoff, start_handoff
from adapter.conversation.tables import ActionRequest
from adapter.ops.alerts import raise_alert
from adapter.outbox.action_tokens import mint_action_token
from adapter.scheduling import survey
from adapter.storage.db import transaction, utcnow
from ehr.errors import FhirError
from ehr.writeback import AppointmentWriter, WriteOutcome
from mappings.fhir_time import parse_instant
from mappings.kinds import local_date_text, local_time_text
from whatsapp.interactive import list_message

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 8

# What each outcome of the writer tells the patient.
OUTCOME_TEXT = {"confirmed": "confirmed", "cancelled": "cancelled", "already": "already",
                "not_allowed": "not_allowed", "handoff": "handoff", "rescheduled": "rescheduled"}


@dataclass
class Result:
    """What performing one request produced, applied in one transaction afterwards."""

    outcome: str
    say: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    slots: WriteOutcome | None = None
    task_ref: str | None = None
    end_handoff: bool = False
    menu: bool = False  # the hand-off is over: the bot answers again, with its menu
    write: WriteOutcome | None = None  # what the writer did (read, wrote, refused): for the audit trail
    audit: list[AuditEntry] = field(default_factory=list)  # entries beyond the writer's (a survey answer)
    reply: dict[str, Any] | None = None  # a ready message body to answer with (a survey's thanks)
    appointments: list[dict[str, Any]] | None = None  # "my appointments": the upcoming ones to show


class ActionRunner:
    def __init__(self, engine: Engine, writer: AppointmentWriter, replies: ChatReplies, *, zone: ZoneInfo,
                 handoff_timeout: timedelta, staff_inbox_url: str | None = None) -> None:
        self.engine = engine
        self.writer = writer
        self.replies = replies
        self.zone = zone
        self.handoff_timeout = handoff_timeout
        self.staff_inbox_url = staff_inbox_url
        self._http = httpx.AsyncClient(timeout=10) if staff_inbox_url else None

    async def run_once(self, limit: int = 20) -> int:
        requests = await asyncio.to_thread(self._claim, limit)
        await asyncio.gather(*(self._run(request) for request in requests))
        return len(requests)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _claim(self, limit: int) -> list[ActionRequest]:
        now = utcnow()
        with transaction(self.engine) as session:
            rows = list(session.exec(select(ActionRequest).where(
                col(ActionRequest.state) == "pending", col(ActionRequest.next_attempt_at) <= now)
                .order_by(col(ActionRequest.id)).limit(limit).with_for_update(skip_locked=True)))
            for row in rows:
                row.attempts += 1
                row.next_attempt_at = now + LEASE
                session.add(row)
            return rows

    async def _run(self, request: ActionRequest) -> None:
        try:
            result = await self._perform(request)
        except FhirError as error:
            log.warning("action %s (%s) failed on attempt %d: %s", request.id, request.kind, request.attempts,
                        type(error).__name__)
            await asyncio.to_thread(self._retry_later, request, type(error).__name__)
            return
        except Exception as error:  # a bug must not stop the other requests; it fails visibly instead
            log.exception("action %s (%s) failed", request.id, request.kind)
            await asyncio.to_thread(self._retry_later, request, type(error).__name__)
            return
        await asyncio.to_thread(self._finish, request, result)

    async def _perform(self, request: ActionRequest) -> Result:
        patient, appointment, version = request.patient_ref, request.resource_ref or "", request.version_id
        if request.kind == "confirm":
            return self._answer(await self.writer.confirm(appointment, patient, version), request.language)
        if request.kind == "cancel":
            return self._answer(await self.writer.cancel(appointment, patient, version), request.language)
        if request.kind == "reschedule_offer":
            return await self._offer(request)
        if request.kind == "reschedule_pick":
            outcome = await self.writer.reschedule(appointment, patient, version, request.slot_ref or "")
            if outcome.kind == "no_slots":  # taken meanwhile: offer what is free now
                return await self._offer(request)
            return self._answer(outcome, request.language)
        if request.kind == "handoff" and (department := routing.department_of(
                request.slot_ref, self.replies.front_desk.base.departments)):
            task = await routing.department_task(self.writer._fhir, patient_ref=patient, department=department,
                                                 request_key=request.dedupe_key, authored_on=utcnow())
            await self._tell_staff_inbox(request, task)
            return Result("handoff", task_ref=task)
        if request.kind == "appointments":
            shown, searched = await appointments.upcoming(self.writer._fhir, patient, utcnow())
            return Result("appointments", appointments=shown, audit=[searched])
        if request.kind == "handoff":
            task = await self.writer.handoff(patient_ref=patient, focus_ref=request.resource_ref,
                                             reason=request.outcome or "patient-asked-for-staff", urgent=request.urgent,
                                             request_key=request.dedupe_key)
            await self._tell_staff_inbox(request, task)
            return Result("handoff", task_ref=task)
        if request.kind == "survey_answer":  # the score travels in slot_ref (adapter.scheduling.survey)
            answer = await survey.write_answer(self.writer._fhir, patient, appointment, request.slot_ref or "")
            return Result("survey_answered", audit=[answer.audit], reply=survey.thanks_message(request.language))
        if request.kind == "handoff_check":
            open_task: str | None = await asyncio.to_thread(self._handoff_task, request)
            if open_task is None or not await self.writer.task_open(open_task):
                return Result("handoff_over", menu=True, end_handoff=True)
            return Result("handoff_open")
        return Result(f"unknown:{request.kind}")

    async def _offer(self, request: ActionRequest) -> Result:
        outcome = await self.writer.free_slots(request.resource_ref or "", request.patient_ref, request.version_id)
        if outcome.kind == "slots":
            return Result("slots_offered", slots=outcome, write=outcome)
        if outcome.kind == "no_slots":
            task = await self.writer.handoff(patient_ref=request.patient_ref, focus_ref=request.resource_ref,
                                             reason="patient-asked-to-reschedule; no free slots", urgent=False)
            return Result("no_slots", say=[("no_slots", {})], task_ref=task, write=outcome)
        return self._answer(outcome, request.language)

    def _answer(self, outcome: WriteOutcome, language: str) -> Result:
        if outcome.kind == "stale":
            return Result("stale", say=[("changed", self._describe(outcome.appointment, language))], write=outcome)
        values = self._describe(outcome.appointment, language) if outcome.kind == "rescheduled" else {}
        return Result(outcome.kind, say=[(OUTCOME_TEXT.get(outcome.kind, "handoff"), values)],
                      task_ref=outcome.task_ref, write=outcome)

    def _describe(self, appointment: dict[str, Any] | None, language: str) -> dict[str, str]:
        """Date, time and a status word: what the patient already had in their confirmation, nothing more."""
        if not appointment or not appointment.get("start"):
            return {"date": "-", "time": "-", "status": self._status_word(appointment, language)}
        moment = parse_instant(appointment["start"]).astimezone(self.zone)
        return {"date": local_date_text(moment, language), "time": local_time_text(moment, language),
                "status": self._status_word(appointment, language)}

    def _status_word(self, appointment: dict[str, Any] | None, language: str) -> str:
        status = (appointment or {}).get("status")
        key = {"booked": "status_booked", "cancelled": "status_cancelled"}.get(str(status), "status_other")
        return self.replies.texts.render(key, language, self.replies.default_language)[0]

    async def _tell_staff_inbox(self, request: ActionRequest, task_ref: str) -> None:
        if self._http is None or self.staff_inbox_url is None:
            return
        event = {"event": "whatsapp.handoff", "task": task_ref, "patient": request.patient_ref,
                 "focus": request.resource_ref, "urgent": request.urgent, "reason": request.outcome}
        if department := routing.department_of(request.slot_ref, self.replies.front_desk.base.departments):
            event["department"] = department.id
        try:
            await self._http.post(self.staff_inbox_url, json=event)
        except httpx.HTTPError as error:  # the Task is the record; the inbox is a courtesy
            log.warning("staff inbox unreachable (%s)", type(error).__name__)

    def _handoff_task(self, request: ActionRequest) -> str | None:
        with Session(self.engine) as session:
            conversation = conversation_of(session, request.phone_index)
            return conversation.handoff_task

    # --- closing a request

    def _retry_later(self, request: ActionRequest, reason: str) -> None:
        with transaction(self.engine) as session:
            row = session.get(ActionRequest, request.id)
            if row is None:
                return
            audit(session, failed_request_entry(row.kind, appointment_ref=row.resource_ref, patient_ref=row.patient_ref,
                                                error=reason, attempt=row.attempts, final=row.attempts >= MAX_ATTEMPTS))
            if row.attempts >= MAX_ATTEMPTS:
                row.state, row.outcome = "failed", f"ehr:{reason}"[:64]
                raise_alert(session, f"action_failed:{row.id}", "action_failed",
                            f"{row.kind} for {row.resource_ref or row.patient_ref} failed {row.attempts} times "
                            f"({reason}); the patient was told the clinic will contact them")
                self._say(session, row, "handoff", {})
            else:
                row.next_attempt_at = utcnow() + timedelta(seconds=min(600, 5 * 2 ** row.attempts))
            session.add(row)

    def _finish(self, request: ActionRequest, result: Result) -> None:
        with transaction(self.engine) as session:
            row = session.get(ActionRequest, request.id)
            if row is None or row.state != "pending":
                return
            conversation = conversation_of(session, row.phone_index)
            if result.end_handoff:  # the front desk completed the Task (or it timed out)
                end_handoff(session, conversation, patient_ref=row.patient_ref, reason=result.outcome)
            elif result.task_ref and row.kind == "handoff":
                start_handoff(session, conversation, result.task_ref, self.handoff_timeout,
                              patient_ref=row.patient_ref, reason="task-created", urgent=row.urgent)
            for key, values in result.say:
                self._say(session, row, key, values)
            if result.slots is not None:
                self._offer_slots(session, row, result.slots)
            if result.menu and (found := self.replies.recipient_of(session, row.phone_index)):
                self.replies.menu(session, natural_key=f"action:{row.id}:menu", patient_ref=row.patient_ref,
                                  recipient=found[1], language=row.language)
            if result.appointments is not None:
                appointments.send(self.replies, session, row, result.appointments, self.zone)
            if result.reply is not None and (found := self.replies.recipient_of(session, row.phone_index)):
                self.replies.send(session, natural_key=f"action:{row.id}:reply", patient_ref=row.patient_ref,
                                  recipient=found[1], message=result.reply, language=row.language)
            row.state, row.outcome = "done", (result.outcome + (f" {result.task_ref}" if result.task_ref else ""))[:64]
            session.add(row)
            audit(session, *writeback_entries(row.kind, appointment_ref=row.resource_ref, patient_ref=row.patient_ref,
                                              write=result.write, task_ref=result.task_ref), *result.audit)

    def _say(self, session: Session, row: ActionRequest, key: str, values: dict[str, str]) -> None:
        found = self.replies.recipient_of(session, row.phone_index)
        if found is None:
            return
        _, number = found
        self.replies.say(session, natural_key=f"action:{row.id}:{key}", patient_ref=row.patient_ref,
                         recipient=number, key=key, language=row.language, **values)

    def _offer_slots(self, session: Session, row: ActionRequest, outcome: WriteOutcome) -> None:
        found = self.replies.recipient_of(session, row.phone_index)
        if found is None:
            return
        texts, language, default = self.replies.texts, row.language, self.replies.default_language
        rows = []
        for slot in outcome.slots[:10]:
            moment = slot.start.astimezone(self.zone)
            token = mint_action_token(session, action="pick_slot", patient_ref=row.patient_ref,
                                      resource_ref=row.resource_ref or "", version_id=row.version_id,
                                      detail=slot.slot_ref)
            rows.append((token, local_time_text(moment, language)[:24], local_date_text(moment, language)[:72]))
        message = list_message(texts.render("slots_prompt", language, default)[0],
                               texts.render("slots_button", language, default)[0], rows)
        self.replies.send(session, natural_key=f"action:{row.id}:slots", patient_ref=row.patient_ref,
                          recipient=found[1], message=message, language=language)
