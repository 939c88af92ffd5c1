"""The :class:`AppointmentWriter`: a patient's tap (Confirm / Cancel / Reschedule / Talk to staff)
written back to the EHR through the read → guard → decide → write loop.

Each tap reads the current Appointment, guards it (the patient must be a participant; its material
state must equal the one the patient saw, else ``stale``), decides, and writes with ``If-Match``
(https://hl7.org/fhir/R4/http.html#concurrency): a JSON Patch where the server offers ``patch`` for
Appointment, else a PUT of the re-read resource. A 409/412 re-runs the loop up to
``conflict_retries`` times; a conflict that persists, or 423/424, becomes a front-desk Task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ehr.capabilities import CapabilityCache
from ehr.client import FhirClient
from ehr.errors import FhirConflictError, FhirError, FhirNotFoundError
from ehr.writeback.appointment import (
    Action,
    apply_adds,
    closed_or_past,
    material,
    others_accepted,
    participant_indexes,
    patient_cancel_ops,
)
from ehr.writeback.elements import Resource, as_dict, id_of, instant, ref, version
from ehr.writeback.handoff import create_handoff_task, handoff_task_open
from ehr.writeback.outcome import HandoffNeeded, WriteOutcome
from ehr.writeback.reschedule import new_booking, reschedule_in_steps, reschedule_in_transaction
from ehr.writeback.slots import release_slots, schedule_of, search_free, slot_shared

ConfirmMode = Literal["participant", "appointment_response"]
MAX_LIST_ROWS = 10  # a WhatsApp list message holds at most 10 rows
_LOCKED_STATUSES = {423: "ehr locked", 424: "ehr dependency failed"}

logger = logging.getLogger(__name__)


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
            if blocked := closed_or_past(current, "confirm", self._now()):
                return blocked
            indexes = participant_indexes(current, patient_ref)
            statuses = {as_dict(current["participant"][i]).get("status") for i in indexes}
            if statuses == {"accepted"}:
                return WriteOutcome("already", current, detail="participant already accepted")
            if self.confirm_mode == "appointment_response":
                return await self._respond_accepted(current, patient_ref)
            ops: list[dict[str, Any]] = [{"op": "add", "path": f"/participant/{i}/status", "value": "accepted"}
                                         for i in indexes]
            if current.get("status") in ("proposed", "pending") and others_accepted(current, indexes):
                ops.append({"op": "add", "path": "/status", "value": "booked"})
            written = await self._write(current, ops)
            return WriteOutcome("confirmed", written, detail=f"status={written.get('status')}")

        return await self._tap("confirm", appointment_ref, patient_ref, version_at_send, step)

    async def cancel(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        """``status=cancelled`` + ``cancelationReason`` pat-crs; frees the slot. A second tap is a no-op."""

        async def step(current: Resource) -> WriteOutcome:
            if current.get("status") == "cancelled":
                return WriteOutcome("already", current, detail="already cancelled")
            if blocked := closed_or_past(current, "cancel", self._now()):
                return blocked
            written = await self._write(current, patient_cancel_ops())
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
            if blocked := closed_or_past(current, "reschedule", self._now()):
                return blocked
            schedule_ref, slot_refs = await schedule_of(self._fhir, current)
            if schedule_ref is None:
                return WriteOutcome("no_slots", current, detail="appointment has no slot")
            options = await search_free(self._fhir, schedule_ref, now=self._now(), window=self.reschedule_window,
                                        max_slots=self.max_slots, exclude=slot_refs)
            return WriteOutcome("slots" if options else "no_slots", current, slots=options,
                                detail=f"{len(options)} on {schedule_ref}")

        return await self._tap("reschedule", appointment_ref, patient_ref, version_at_send, step)

    async def reschedule(
        self, appointment_ref: str, patient_ref: str, version_at_send: str | None, slot_ref: str
    ) -> WriteOutcome:
        """Books ``slot_ref`` and cancels the current booking atomically (:mod:`ehr.writeback.reschedule`).
        A slot that is no longer free (or no slot reference at all) is ``no_slots``: offer again."""

        async def step(current: Resource) -> WriteOutcome:
            try:
                new_slot_id = id_of(slot_ref, "Slot")
            except ValueError:
                return WriteOutcome("no_slots", current, detail="not a slot reference")
            if current.get("status") == "cancelled":
                return WriteOutcome("not_allowed", current, detail="status=cancelled")
            if blocked := closed_or_past(current, "reschedule", self._now()):
                return blocked
            schedule_ref, old_slot_refs = await schedule_of(self._fhir, current)
            if f"Slot/{new_slot_id}" in old_slot_refs:
                return WriteOutcome("already", current, detail="already on that slot")
            try:
                new_slot = await self._fhir.read("Slot", new_slot_id)
            except FhirNotFoundError:
                return WriteOutcome("no_slots", current, detail="slot taken")
            if ref(new_slot.get("schedule")) != schedule_ref or schedule_ref is None:
                return WriteOutcome("not_allowed", current, detail="slot not on this schedule")
            start = instant(new_slot.get("start"))
            if new_slot.get("status") != "free" or start is None or start <= self._now():
                return WriteOutcome("no_slots", current, detail="slot taken")
            old_slots = [await self._fhir.read("Slot", id_of(r, "Slot")) for r in old_slot_refs]
            if self.free_slot_on_cancel:
                old_slots = [s for s in old_slots if s.get("status") == "busy"
                             and not await slot_shared(self._fhir, s, current)]
            else:
                old_slots = []
            booking = new_booking(current, new_slot, patient_ref, self._now())
            if (await self._caps.get()).supports_system("transaction"):
                return await reschedule_in_transaction(self._fhir, current, booking, new_slot, old_slots)
            return await reschedule_in_steps(
                self._fhir, current, booking, new_slot, old_slots,
                cancel=lambda appointment: self._write(appointment, patient_cancel_ops()),
                release=lambda appointment: self._release_slots(appointment, patient_ref),
            )

        return await self._tap("reschedule", appointment_ref, patient_ref, version_at_send, step)

    async def handoff(self, *, patient_ref: str, focus_ref: str | None, reason: str, urgent: bool,
                      request_key: str | None = None) -> str:
        """A front-desk Task for ``patient_ref``; returns ``"Task/<id>"``
        (:func:`ehr.writeback.handoff.create_handoff_task`: ``reason`` is a PHI-free code, ``request_key``
        makes a retried request find its Task instead of creating a second one)."""
        return await create_handoff_task(self._fhir, patient_ref=patient_ref, focus_ref=focus_ref, reason=reason,
                                         urgent=urgent, request_key=request_key, authored_on=self._now())

    async def task_open(self, task_ref: str) -> bool:
        """False once the Task is completed/cancelled/failed/rejected (or gone)."""
        return await handoff_task_open(self._fhir, task_ref)

    # --- the read → guard → decide → write loop ------------------------------------------

    async def _tap(
        self, action: Action, appointment_ref: str, patient_ref: str, version_at_send: str | None,
        step: Callable[[Resource], Awaitable[WriteOutcome]],
    ) -> WriteOutcome:
        appointment_id = id_of(appointment_ref, "Appointment")
        sent_state: tuple[Any, ...] | None = None
        current: Resource | None = None
        for attempt in range(self.conflict_retries + 1):
            current = await self._fhir.read("Appointment", appointment_id)
            if not participant_indexes(current, patient_ref):
                return WriteOutcome("not_allowed", current, detail="not a participant")
            if version_at_send is not None and version(current) != version_at_send:
                if sent_state is None:
                    sent_state = await self._material_at(appointment_id, version_at_send)
                if sent_state != material(current):
                    logger.info("%s on Appointment/%s: stale (sent v%s, now v%s)", action, appointment_id,
                                version_at_send, version(current))
                    return WriteOutcome("stale", current, detail=f"sent v{version_at_send}, now v{version(current)}")
            try:
                outcome = await step(current)
            except FhirConflictError as error:
                logger.info("%s on Appointment/%s v%s: conflict (HTTP %s), attempt %d", action, appointment_id,
                            version(current), error.status_code, attempt + 1)
                continue
            except HandoffNeeded as needed:
                return await self._handed_off(action, current, patient_ref, needed.why)
            except FhirError as error:
                if error.status_code in _LOCKED_STATUSES:
                    return await self._handed_off(action, current, patient_ref, _LOCKED_STATUSES[error.status_code])
                raise
            logger.info("%s on Appointment/%s: %s (%s)", action, appointment_id, outcome.kind, outcome.detail)
            return outcome
        assert current is not None
        return await self._handed_off(action, current, patient_ref, "write conflict")

    async def _handed_off(self, action: Action, appointment: Resource, patient_ref: str, why: str) -> WriteOutcome:
        start = instant(appointment.get("start"))
        urgent = start is not None and start - self._now() < timedelta(hours=24)
        reason = f"patient-requested-{action}; {why}"
        task_ref = await self.handoff(patient_ref=patient_ref, focus_ref=f"Appointment/{appointment['id']}",
                                      reason=reason, urgent=urgent)
        return WriteOutcome("handoff", appointment, task_ref=task_ref, detail=reason)

    async def _material_at(self, appointment_id: str, version_id: str) -> tuple[Any, ...]:
        try:
            return material(await self._fhir.vread("Appointment", appointment_id, version_id))
        except FhirError as error:  # no history: only the version id can be compared, and it differs
            logger.info("vread Appointment/%s v%s failed (%s); comparing version ids", appointment_id,
                        version_id, type(error).__name__)
            return ("unknown-version", version_id)

    async def _write(self, current: Resource, ops: list[dict[str, Any]]) -> Resource:
        current_version = version(current)
        if current_version is None:
            raise HandoffNeeded("no version id")  # an unversioned write could overwrite a clinic edit
        if (await self._caps.get()).supports_json_patch("Appointment"):
            return await self._fhir.patch("Appointment", current["id"], ops, if_match=current_version)
        return await self._fhir.update(apply_adds(current, ops), if_match=current_version)

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

    async def _release_slots(self, appointment: Resource, patient_ref: str) -> str | None:
        """Frees the appointment's Slots; a Slot that cannot be released becomes a routine Task
        (returned), the cancel itself stands."""
        stuck = await release_slots(self._fhir, appointment, conflict_retries=self.conflict_retries)
        if stuck is None:
            return None
        return await self.handoff(patient_ref=patient_ref, focus_ref=stuck,
                                  reason="patient-requested-cancel; slot release conflict", urgent=False)
