"""Safe write-back of a patient's button tap (Confirm / Cancel / Reschedule / Talk to staff) to the EHR.

Every write is version-aware (https://hl7.org/fhir/R4/http.html#concurrency): it carries
``If-Match: W/"<versionId>"`` of the version just read, and is a JSON Patch of the few elements
the tap changes where the server offers ``patch`` for Appointment (so a clinic's concurrent edit
of another element is never overwritten by our stale copy), else a PUT of the re-read resource.

Recipe of each tap: read the current Appointment → guard (the patient must be a participant; the
appointment's *material* state — status, start, end, slot — must equal the one the patient saw
when the message was sent) → decide (``already`` / ``not_allowed`` / the write) → write. A 409 or
412 means someone wrote first: re-read, re-decide, retry up to ``conflict_retries`` times; a
conflict that persists, or 423/424, becomes a FHIR Task for the front desk (kind ``handoff``).

Reschedule books the new slot and cancels the old booking in one transaction Bundle
(https://hl7.org/fhir/R4/http.html#transaction), so the patient never ends with two bookings or
none; without transaction support it books, then cancels, and undoes the booking if the cancel
fails. Logs carry ids, versions and codes only, never PHI.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ehr.capabilities import CapabilityCache
from ehr.client import FhirClient
from ehr.errors import FhirConflictError, FhirError, FhirNotFoundError

Resource = dict[str, Any]
OutcomeKind = Literal["confirmed", "cancelled", "rescheduled", "already", "stale", "not_allowed", "slots",
                      "no_slots", "handoff"]
ConfirmMode = Literal["participant", "appointment_response"]

CANCELLATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
# Display from the R4 code system (https://terminology.hl7.org/CodeSystem-appointment-cancellation-reason.html).
PATIENT_CANCELLED_VIA_REMINDER = {"system": CANCELLATION_SYSTEM, "code": "pat-crs",
                                  "display": "Patient: Canceled via automated reminder system"}
ERROR_CANCELLATION = {"system": CANCELLATION_SYSTEM, "code": "oth-err", "display": "Other: Error"}
MAX_LIST_ROWS = 10  # a WhatsApp list message holds at most 10 rows
# Statuses after which a patient tap can no longer change the booking.
_CLOSED = frozenset({"fulfilled", "noshow", "entered-in-error", "arrived", "checked-in"})
_TASK_DONE = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})
_LOCKED_STATUSES = {423: "ehr locked", 424: "ehr dependency failed"}
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # https://hl7.org/fhir/R4/datatypes.html#id
_REASON_RE = re.compile(r"^[a-z0-9][a-z0-9 ;:,._/-]{0,199}$")

logger = logging.getLogger(__name__)


TASK_IDENTIFIER_SYSTEM = "urn:fhir-whatsapp-bridge:request"  # the request a hand-off Task answers


@dataclass(frozen=True)
class SlotOption:
    slot_ref: str
    start: datetime  # timezone-aware
    end: datetime


@dataclass(frozen=True)
class WriteOutcome:
    kind: OutcomeKind
    appointment: dict[str, Any] | None  # the appointment as it is now (after the write, or as read)
    task_ref: str | None = None  # "Task/…" when a hand-off Task was created
    slots: tuple[SlotOption, ...] = ()
    detail: str = ""  # ids/codes/classes only, never PHI


class _Handoff(Exception):
    """A write that a person must finish: carries the PHI-free reason suffix."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AppointmentWriter:
    """Writes taps back to the EHR; one per :class:`FhirClient`. ``capabilities`` overrides the
    CapabilityStatement lookup (tests, or a server whose statement is wrong)."""

    def __init__(
        self,
        fhir: FhirClient,
        *,
        confirm_mode: ConfirmMode = "participant",
        reschedule_window: timedelta = timedelta(days=14),
        max_slots: int = 10,
        conflict_retries: int = 2,
        free_slot_on_cancel: bool = True,
        now: Callable[[], datetime] = _utc_now,
        capabilities: CapabilityCache | None = None,
    ) -> None:
        if confirm_mode not in ("participant", "appointment_response"):
            raise ValueError("confirm_mode is 'participant' or 'appointment_response'")
        if not 1 <= max_slots <= MAX_LIST_ROWS:
            raise ValueError(f"max_slots must be 1-{MAX_LIST_ROWS} (the list-message limit)")
        if conflict_retries < 0:
            raise ValueError("conflict_retries must be 0 or more")
        self._fhir = fhir
        self.confirm_mode = confirm_mode
        self.reschedule_window = reschedule_window
        self.max_slots = max_slots
        self.conflict_retries = conflict_retries
        self.free_slot_on_cancel = free_slot_on_cancel
        self._now = now
        self._caps = capabilities or CapabilityCache(fhir)

    # --- taps ---------------------------------------------------------------------------

    async def confirm(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        """Patient participant → ``accepted`` (or an AppointmentResponse). Appointment status rule,
        https://hl7.org/fhir/R4/appointment.html ("Appointment Statuses and Participant
        Statuses"): ``proposed``/``pending`` mean some participants have not yet accepted; once
        every required participant has accepted the appointment is ``booked``. So the status
        becomes ``booked`` only if every *other* required participant already accepted."""

        async def step(current: Resource) -> WriteOutcome:
            if blocked := self._closed_or_past(current, "confirm"):
                return blocked
            indexes = _participant_indexes(current, patient_ref)
            statuses = {_dict(current["participant"][i]).get("status") for i in indexes}
            if statuses == {"accepted"}:
                return WriteOutcome("already", current, detail="participant already accepted")
            if self.confirm_mode == "appointment_response":
                return await self._respond_accepted(current, patient_ref)
            ops: list[dict[str, Any]] = [{"op": "add", "path": f"/participant/{i}/status", "value": "accepted"}
                                         for i in indexes]
            if current.get("status") in ("proposed", "pending") and _others_accepted(current, indexes):
                ops.append({"op": "add", "path": "/status", "value": "booked"})
            written = await self._write(current, ops)
            return WriteOutcome("confirmed", written, detail=f"status={written.get('status')}")

        return await self._tap("confirm", appointment_ref, patient_ref, version_at_send, step)

    async def cancel(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        """``status=cancelled`` + ``cancelationReason`` pat-crs; frees the slot. A second tap is a no-op."""

        async def step(current: Resource) -> WriteOutcome:
            if current.get("status") == "cancelled":
                return WriteOutcome("already", current, detail="already cancelled")
            if blocked := self._closed_or_past(current, "cancel"):
                return blocked
            written = await self._write(current, [
                {"op": "add", "path": "/status", "value": "cancelled"},
                {"op": "add", "path": "/cancelationReason", "value": {"coding": [PATIENT_CANCELLED_VIA_REMINDER]}},
            ])
            task_ref = await self._release_slots(written, patient_ref) if self.free_slot_on_cancel else None
            return WriteOutcome("cancelled", written, task_ref=task_ref,
                                detail="slot release handed off" if task_ref else "")

        return await self._tap("cancel", appointment_ref, patient_ref, version_at_send, step)

    async def free_slots(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        """Free Slots on the same Schedule as the appointment's slot, from now to now + window,
        soonest first, at most ``max_slots``: kind ``slots`` or ``no_slots``."""

        async def step(current: Resource) -> WriteOutcome:
            if current.get("status") == "cancelled":
                return WriteOutcome("not_allowed", current, detail="status=cancelled")
            if blocked := self._closed_or_past(current, "reschedule"):
                return blocked
            schedule_ref, slot_refs = await self._schedule_of(current)
            if schedule_ref is None:
                return WriteOutcome("no_slots", current, detail="appointment has no slot")
            options = await self._search_free(schedule_ref, exclude=slot_refs)
            return WriteOutcome("slots" if options else "no_slots", current, slots=options,
                                detail=f"{len(options)} on {schedule_ref}")

        return await self._tap("reschedule", appointment_ref, patient_ref, version_at_send, step)

    async def reschedule(
        self, appointment_ref: str, patient_ref: str, version_at_send: str | None, slot_ref: str
    ) -> WriteOutcome:
        """Books ``slot_ref`` and cancels the current booking atomically (see the module doc).
        A slot that is no longer free (or no slot reference at all) is ``no_slots``: offer again."""

        async def step(current: Resource) -> WriteOutcome:
            try:
                new_slot_id = _id_of(slot_ref, "Slot")
            except ValueError:
                return WriteOutcome("no_slots", current, detail="not a slot reference")
            if current.get("status") == "cancelled":
                return WriteOutcome("not_allowed", current, detail="status=cancelled")
            if blocked := self._closed_or_past(current, "reschedule"):
                return blocked
            schedule_ref, old_slot_refs = await self._schedule_of(current)
            if f"Slot/{new_slot_id}" in old_slot_refs:
                return WriteOutcome("already", current, detail="already on that slot")
            try:
                new_slot = await self._fhir.read("Slot", new_slot_id)
            except FhirNotFoundError:
                return WriteOutcome("no_slots", current, detail="slot taken")
            if _ref(new_slot.get("schedule")) != schedule_ref or schedule_ref is None:
                return WriteOutcome("not_allowed", current, detail="slot not on this schedule")
            start = _instant(new_slot.get("start"))
            if new_slot.get("status") != "free" or start is None or start <= self._now():
                return WriteOutcome("no_slots", current, detail="slot taken")
            old_slots = [await self._fhir.read("Slot", _id_of(r, "Slot")) for r in old_slot_refs]
            if self.free_slot_on_cancel:
                old_slots = [s for s in old_slots if s.get("status") == "busy"
                             and not await self._slot_shared(s, current)]
            else:
                old_slots = []
            booking = _new_booking(current, new_slot, patient_ref, self._now())
            if (await self._caps.get()).supports_system("transaction"):
                return await self._reschedule_in_transaction(current, booking, new_slot, old_slots)
            return await self._reschedule_in_steps(current, booking, new_slot, old_slots, patient_ref)

        return await self._tap("reschedule", appointment_ref, patient_ref, version_at_send, step)

    async def handoff(self, *, patient_ref: str, focus_ref: str | None, reason: str, urgent: bool,
                      request_key: str | None = None) -> str:
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
            "authoredOn": self._now().isoformat(timespec="seconds"),
        }
        if focus_ref:
            task["focus"] = {"reference": focus_ref}
        condition = None
        if request_key:
            task["identifier"] = [{"system": TASK_IDENTIFIER_SYSTEM, "value": request_key}]
            condition = [("identifier", f"{TASK_IDENTIFIER_SYSTEM}|{request_key}")]
        created = await self._fhir.create(task, if_none_exist=condition)
        task_ref = f"Task/{created['id']}"
        logger.info("hand-off %s created (focus %s, priority %s, reason %s)", task_ref, focus_ref,
                    task["priority"], reason)
        return task_ref

    async def task_open(self, task_ref: str) -> bool:
        """False once the Task is completed/cancelled/failed/rejected (or gone)."""
        try:
            task = await self._fhir.read("Task", _id_of(task_ref, "Task"))
        except FhirNotFoundError:
            return False
        return task.get("status") not in _TASK_DONE

    # --- the read → guard → decide → write loop ------------------------------------------

    async def _tap(
        self, action: str, appointment_ref: str, patient_ref: str, version_at_send: str | None,
        step: Callable[[Resource], Awaitable[WriteOutcome]],
    ) -> WriteOutcome:
        appointment_id = _id_of(appointment_ref, "Appointment")
        sent_state: tuple[Any, ...] | None = None
        current: Resource | None = None
        for attempt in range(self.conflict_retries + 1):
            current = await self._fhir.read("Appointment", appointment_id)
            if not _participant_indexes(current, patient_ref):
                return WriteOutcome("not_allowed", current, detail="not a participant")
            if version_at_send is not None and _version(current) != version_at_send:
                if sent_state is None:
                    sent_state = await self._material_at(appointment_id, version_at_send)
                if sent_state != _material(current):
                    logger.info("%s on Appointment/%s: stale (sent v%s, now v%s)", action, appointment_id,
                                version_at_send, _version(current))
                    return WriteOutcome("stale", current, detail=f"sent v{version_at_send}, now v{_version(current)}")
            try:
                outcome = await step(current)
            except FhirConflictError as error:
                logger.info("%s on Appointment/%s v%s: conflict (HTTP %s), attempt %d", action, appointment_id,
                            _version(current), error.status_code, attempt + 1)
                continue
            except _Handoff as handoff:
                return await self._handed_off(action, current, patient_ref, handoff.why)
            except FhirError as error:
                if error.status_code in _LOCKED_STATUSES:
                    return await self._handed_off(action, current, patient_ref, _LOCKED_STATUSES[error.status_code])
                raise
            logger.info("%s on Appointment/%s: %s (%s)", action, appointment_id, outcome.kind, outcome.detail)
            return outcome
        assert current is not None
        return await self._handed_off(action, current, patient_ref, "write conflict")

    async def _handed_off(self, action: str, appointment: Resource, patient_ref: str, why: str) -> WriteOutcome:
        start = _instant(appointment.get("start"))
        urgent = start is not None and start - self._now() < timedelta(hours=24)
        reason = f"patient-requested-{action}; {why}"
        task_ref = await self.handoff(patient_ref=patient_ref, focus_ref=f"Appointment/{appointment['id']}",
                                      reason=reason, urgent=urgent)
        return WriteOutcome("handoff", appointment, task_ref=task_ref, detail=reason)

    async def _material_at(self, appointment_id: str, version_id: str) -> tuple[Any, ...]:
        try:
            return _material(await self._fhir.vread("Appointment", appointment_id, version_id))
        except FhirError as error:  # no history: only the version id can be compared, and it differs
            logger.info("vread Appointment/%s v%s failed (%s); comparing version ids", appointment_id,
                        version_id, type(error).__name__)
            return ("unknown-version", version_id)

    def _closed_or_past(self, current: Resource, action: str) -> WriteOutcome | None:
        status = current.get("status")
        if status in _CLOSED or (action == "confirm" and status == "cancelled"):
            return WriteOutcome("not_allowed", current, detail=f"status={status}")
        start = _instant(current.get("start"))
        if start is not None and start <= self._now():
            return WriteOutcome("not_allowed", current, detail="start in the past")
        return None

    async def _write(self, current: Resource, ops: list[dict[str, Any]]) -> Resource:
        version = _version(current)
        if version is None:
            raise _Handoff("no version id")  # an unversioned write could overwrite a clinic edit
        if (await self._caps.get()).supports_json_patch("Appointment"):
            return await self._fhir.patch("Appointment", current["id"], ops, if_match=version)
        return await self._fhir.update(_apply(current, ops), if_match=version)

    async def _respond_accepted(self, current: Resource, patient_ref: str) -> WriteOutcome:
        appointment_ref = f"Appointment/{current['id']}"
        criteria = [("appointment", appointment_ref), ("actor", patient_ref), ("part-status", "accepted")]
        if await self._fhir.search("AppointmentResponse", criteria, max_pages=1):
            return WriteOutcome("already", current, detail="AppointmentResponse exists")
        response = await self._fhir.create({
            "resourceType": "AppointmentResponse",
            "appointment": {"reference": appointment_ref},
            "actor": {"reference": patient_ref},
            "participantStatus": "accepted",
        }, if_none_exist=criteria)
        return WriteOutcome("confirmed", current, detail=f"AppointmentResponse/{response.get('id')}")

    # --- slots ----------------------------------------------------------------------------

    async def _schedule_of(self, appointment: Resource) -> tuple[str | None, list[str]]:
        slot_refs = [r for r in (_ref(s) for s in _list(appointment.get("slot"))) if r]
        for slot_ref in slot_refs:
            try:
                slot = await self._fhir.read("Slot", _id_of(slot_ref, "Slot"))
            except FhirNotFoundError:
                continue
            if schedule := _ref(slot.get("schedule")):
                return schedule, slot_refs
        return None, slot_refs

    async def _search_free(self, schedule_ref: str, *, exclude: list[str]) -> tuple[SlotOption, ...]:
        now = self._now()
        params = [("schedule", schedule_ref), ("status", "free"),
                  ("start", f"ge{now.isoformat(timespec='seconds')}"),
                  ("start", f"le{(now + self.reschedule_window).isoformat(timespec='seconds')}"),
                  ("_sort", "start"), ("_count", str(self.max_slots + len(exclude)))]
        options: list[SlotOption] = []
        for slot in await self._fhir.search("Slot", params, max_pages=1):
            start, end = _instant(slot.get("start")), _instant(slot.get("end"))
            ref = f"Slot/{slot.get('id')}"
            if slot.get("status") != "free" or ref in exclude or start is None or end is None or start < now:
                continue
            options.append(SlotOption(ref, start, end))
        options.sort(key=lambda o: o.start)
        return tuple(options[: self.max_slots])

    async def _slot_shared(self, slot: Resource, appointment: Resource) -> bool:
        """Another live appointment on the same (overbooked) slot keeps it busy."""
        others = await self._fhir.search("Appointment", [("slot", f"Slot/{slot['id']}")], max_pages=1)
        return any(a.get("id") != appointment.get("id") and a.get("status") not in
                   ("cancelled", "entered-in-error", "noshow") for a in others)

    async def _release_slots(self, appointment: Resource, patient_ref: str) -> str | None:
        """Slot.status → free (If-Match, re-read on conflict). A slot that cannot be released
        becomes a routine Task, the cancel itself stands."""
        for slot_ref in [r for r in (_ref(s) for s in _list(appointment.get("slot"))) if r]:
            for _attempt in range(self.conflict_retries + 1):
                try:
                    slot = await self._fhir.read("Slot", _id_of(slot_ref, "Slot"))
                    if slot.get("status") != "busy" or await self._slot_shared(slot, appointment):
                        break
                    await self._fhir.update({**slot, "status": "free"}, if_match=_version(slot))
                    logger.info("freed %s (was v%s)", slot_ref, _version(slot))
                    break
                except FhirConflictError:
                    continue
            else:
                return await self.handoff(patient_ref=patient_ref, focus_ref=slot_ref,
                                          reason="patient-requested-cancel; slot release conflict", urgent=False)
        return None

    # --- reschedule --------------------------------------------------------------------------

    async def _reschedule_in_transaction(
        self, current: Resource, booking: Resource, new_slot: Resource, old_slots: list[Resource],
    ) -> WriteOutcome:
        old_version = _version(current)
        if old_version is None or _version(new_slot) is None:
            raise _Handoff("no version id")
        entries: list[Resource] = [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": booking,
             "request": {"method": "POST", "url": "Appointment"}},
            _put(new_slot, {"status": "busy"}),
            _put(current, {"status": "cancelled", "cancelationReason": {"coding": [PATIENT_CANCELLED_VIA_REMINDER]}}),
            *(_put(slot, {"status": "free"}) for slot in old_slots),
        ]
        response = await self._fhir.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        # Response entries follow the request's order (https://hl7.org/fhir/R4/http.html#transaction-response).
        first = _dict((_list(response.get("entry")) or [{}])[0])
        created = first.get("resource")
        if not isinstance(created, dict) or created.get("resourceType") != "Appointment":
            location = str(_dict(first.get("response")).get("location", ""))
            created = await self._fhir.read("Appointment", _id_of(location, "Appointment"))
        logger.info("rescheduled Appointment/%s v%s -> Appointment/%s on Slot/%s (transaction)", current["id"],
                    old_version, created.get("id"), new_slot["id"])
        return WriteOutcome("rescheduled", created, detail=f"old=Appointment/{current['id']} new=Appointment/"
                                                           f"{created.get('id')} slot=Slot/{new_slot['id']}")

    async def _reschedule_in_steps(
        self, current: Resource, booking: Resource, new_slot: Resource, old_slots: list[Resource],
        patient_ref: str,
    ) -> WriteOutcome:
        """No transactions: hold the new slot (If-Match), book, cancel the old booking, free its
        slot; if the old booking cannot be cancelled, undo the new one; if undoing fails, Task."""
        busy = await self._fhir.update({**new_slot, "status": "busy"}, if_match=_version(new_slot))
        try:
            created = await self._fhir.create(booking)
        except FhirError:
            await self._fhir.update({**busy, "status": "free"}, if_match=_version(busy))
            raise
        try:
            cancelled = await self._write(current, [
                {"op": "add", "path": "/status", "value": "cancelled"},
                {"op": "add", "path": "/cancelationReason", "value": {"coding": [PATIENT_CANCELLED_VIA_REMINDER]}},
            ])
        except FhirError as error:
            logger.info("reschedule of Appointment/%s: cancelling old failed (%s); undoing Appointment/%s",
                        current["id"], type(error).__name__, created.get("id"))
            try:
                await self._fhir.update({**created, "status": "cancelled",
                                         "cancelationReason": {"coding": [ERROR_CANCELLATION]}},
                                        if_match=_version(created))
                await self._fhir.update({**busy, "status": "free"}, if_match=_version(busy))
            except FhirError as undo_error:
                logger.warning("undo of Appointment/%s failed (%s)", created.get("id"), type(undo_error).__name__)
                raise _Handoff("reschedule incomplete; two bookings") from undo_error
            raise  # a conflict retries the whole tap; anything else propagates
        for slot in old_slots:
            try:
                await self._fhir.update({**slot, "status": "free"}, if_match=_version(slot))
            except FhirConflictError:
                await self._release_slots({"id": current["id"], "slot": [{"reference": f"Slot/{slot['id']}"}]},
                                          patient_ref)
        return WriteOutcome("rescheduled", created, detail=f"old=Appointment/{cancelled['id']} new=Appointment/"
                                                           f"{created.get('id')} slot=Slot/{new_slot['id']}")


# --- pure helpers ------------------------------------------------------------------------------


def _new_booking(old: Resource, slot: Resource, patient_ref: str, now: datetime) -> Resource:
    """The replacement Appointment: same participants and clinical coding, the new slot's times.
    Business identifiers, narrative and the cancellation reason are not carried over."""
    booking = {k: copy.deepcopy(v) for k, v in old.items()
               if k not in ("id", "meta", "text", "identifier", "cancelationReason", "slot", "start", "end",
                            "minutesDuration", "created")}
    tags = {k: v for k, v in _dict(old.get("meta")).items() if k in ("tag", "security")}
    if tags:
        booking["meta"] = copy.deepcopy(tags)
    start, end = _instant(slot.get("start")), _instant(slot.get("end"))
    booking.update({"status": "booked", "slot": [{"reference": f"Slot/{slot['id']}"}],
                    "start": slot["start"], "end": slot["end"], "created": now.date().isoformat()})
    if start and end:
        booking["minutesDuration"] = int((end - start).total_seconds() // 60)
    for participant in _list(booking.get("participant")):
        if isinstance(participant, dict) and _same_ref(participant.get("actor"), patient_ref):
            participant["status"] = "accepted"
    return booking


def _put(resource: Resource, changes: Resource) -> Resource:
    version = _version(resource)
    return {"fullUrl": f"{resource['resourceType']}/{resource['id']}", "resource": {**resource, **changes},
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}",
                        "ifMatch": f'W/"{version}"'}}


def _apply(resource: Resource, ops: list[dict[str, Any]]) -> Resource:
    """Applies our own ``add`` operations (object members and existing list items) to a copy."""
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


def _material(appointment: Resource) -> tuple[Any, ...]:
    """What a patient's tap was about: status, start, end, slot (not comments, not participants)."""
    slots = sorted(r for r in (_ref(s) for s in _list(appointment.get("slot"))) if r)
    return (appointment.get("status"), _instant(appointment.get("start")), _instant(appointment.get("end")),
            tuple(slots))


def _participant_indexes(appointment: Resource, patient_ref: str) -> list[int]:
    return [i for i, p in enumerate(_list(appointment.get("participant")))
            if isinstance(p, dict) and _same_ref(p.get("actor"), patient_ref)]


def _others_accepted(appointment: Resource, patient_indexes: list[int]) -> bool:
    """Every other *required* participant (``required`` absent means required) has accepted."""
    return all(p.get("status") == "accepted" for i, p in enumerate(_list(appointment.get("participant")))
               if isinstance(p, dict) and i not in patient_indexes
               and p.get("required", "required") == "required")


def _id_of(reference: str, resource_type: str) -> str:
    """The id of a ``Type/id`` reference (relative, absolute or versioned) of the expected type."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != resource_type or not _ID_RE.match(parts[-1]):
        raise ValueError(f"expected a {resource_type} reference")
    return parts[-1]


def _same_ref(value: Any, wanted: str) -> bool:
    """``actor.reference`` names ``wanted`` (``Type/id``), relative, absolute or versioned."""
    reference = _ref(value)
    if reference is None:
        return False
    if reference == wanted:
        return True
    kind = wanted.split("/")[0]
    try:
        return f"{kind}/{_id_of(reference, kind)}" == wanted
    except ValueError:
        return False


def _version(resource: Resource) -> str | None:
    version = _dict(resource.get("meta")).get("versionId")
    return str(version) if version is not None else None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _ref(value: Any) -> str | None:
    reference = _dict(value).get("reference")
    return reference if isinstance(reference, str) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
