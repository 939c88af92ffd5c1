"""ehr.writeback against the real sekmet FHIR server: If-Match, conflicts, hand-off Tasks,
staleness, cancel + slot release, and the reschedule transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ehr.auth import FhirAuth
from ehr.capabilities import CapabilityCache, ServerCapabilities
from ehr.client import FhirClient
from ehr.writeback import AppointmentWriter, WriteOutcome
from tests.support.fhir_server import RunningFhirServer
from tests.support.synthetic import (
    reference,
    synthetic_appointment,
    synthetic_location,
    synthetic_patient,
    synthetic_schedule,
    synthetic_slot,
)

pytestmark = pytest.mark.fhir
Resource = dict[str, Any]
Hook = Callable[[str], Awaitable[None]]


class HookedClient(FhirClient):
    """A FhirClient that runs ``before_write`` (a second writer) just before each write it sends."""

    before_write: Hook | None = None
    writes: list[str]

    async def _hook(self, operation: str) -> None:
        self.writes.append(operation)
        if self.before_write is not None:
            await self.before_write(operation)

    async def patch(self, resource_type: str, resource_id: str, operations: Sequence[dict[str, Any]],
                    if_match: str | None = None) -> Resource:
        await self._hook(f"patch {resource_type}")
        return await super().patch(resource_type, resource_id, operations, if_match=if_match)

    async def update(self, resource: Resource, if_match: str | None = None) -> Resource:
        await self._hook(f"update {resource['resourceType']}")
        return await super().update(resource, if_match=if_match)

    async def transaction(self, bundle: Resource) -> Resource:
        await self._hook("transaction")
        return await super().transaction(bundle)


@dataclass
class Clinic:
    fhir: HookedClient
    other: FhirClient  # the clinic's own writes, not hooked
    patient_ref: str
    schedule_ref: str
    slots: list[Resource]
    appointment: Resource

    @property
    def ref(self) -> str:
        return reference(self.appointment)

    @property
    def version(self) -> str:
        return str(self.appointment["meta"]["versionId"])

    async def current(self) -> Resource:
        return await self.other.read("Appointment", self.appointment["id"])

    async def versions(self) -> int:
        return len(await self.other.history("Appointment", self.appointment["id"]))

    async def slot_status(self, slot: Resource) -> str:
        return str((await self.other.read("Slot", slot["id"]))["status"])

    async def edit(self, **changes: Any) -> Resource:
        """A clinic edit of the appointment (If-Match on what it read)."""
        now = await self.current()
        return await self.other.update({**now, **changes}, if_match=now["meta"]["versionId"])


def _hour(days: float) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
async def clinic(fhir_server: RunningFhirServer) -> AsyncIterator[Clinic]:
    async with HookedClient(fhir_server.base_url, FhirAuth.none()) as fhir, \
            FhirClient(fhir_server.base_url, FhirAuth.none()) as other:
        fhir.writes = []
        location = await other.create(synthetic_location())
        patient = await other.create(synthetic_patient(number=42))
        schedule = await other.create(synthetic_schedule(reference(location)))
        slots = [await other.create(synthetic_slot(reference(schedule), _hour(2 + day)))
                 for day in range(5)]
        slots[0] = await other.update({**slots[0], "status": "busy"}, if_match=slots[0]["meta"]["versionId"])
        appointment = synthetic_appointment(reference(patient), start=datetime.fromisoformat(slots[0]["start"]),
                                            location_ref=reference(location))
        appointment["participant"][0]["status"] = "needs-action"
        appointment["slot"] = [{"reference": reference(slots[0])}]
        created = await other.create(appointment)
        yield Clinic(fhir, other, reference(patient), reference(schedule), slots, created)


def writer(clinic: Clinic, **options: Any) -> AppointmentWriter:
    return AppointmentWriter(clinic.fhir, **options)


def _patient_status(appointment: Resource, patient_ref: str) -> str:
    return next(p["status"] for p in appointment["participant"] if p["actor"]["reference"] == patient_ref)


# --- confirm -----------------------------------------------------------------------------------


async def test_confirm_patches_with_if_match_and_rereads_after_a_concurrent_edit(clinic: Clinic) -> None:
    bumped: list[str] = []

    async def clinic_edits_first(operation: str) -> None:
        if not bumped:
            bumped.append(operation)
            await clinic.edit(comment="front desk note (synthetic)")  # non-material: not stale

    clinic.fhir.before_write = clinic_edits_first
    outcome = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, clinic.version)

    assert outcome.kind == "confirmed"
    assert clinic.fhir.writes == ["patch Appointment", "patch Appointment"]  # 412 on v1, re-read, v2 wins
    now = await clinic.current()
    assert _patient_status(now, clinic.patient_ref) == "accepted"
    assert now["comment"] == "front desk note (synthetic)"  # the clinic's edit survived
    assert now["status"] == "booked"
    assert await clinic.versions() == 3  # create, the clinic's edit, exactly one confirm
    assert outcome.appointment is not None and outcome.appointment["meta"]["versionId"] == "3"


async def test_confirm_twice_is_already_and_writes_nothing(clinic: Clinic) -> None:
    first = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, clinic.version)
    second = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, clinic.version)
    assert (first.kind, second.kind) == ("confirmed", "already")
    assert await clinic.versions() == 2


async def test_confirm_by_put_when_the_server_offers_no_patch(clinic: Clinic) -> None:
    statement = await clinic.other.capabilities()
    for rest in statement["rest"]:
        for resource in rest["resource"]:
            resource["interaction"] = [i for i in resource["interaction"] if i["code"] != "patch"]
    caps = CapabilityCache.fixed(clinic.fhir, ServerCapabilities(statement))
    outcome = await writer(clinic, capabilities=caps).confirm(clinic.ref, clinic.patient_ref, clinic.version)
    assert outcome.kind == "confirmed"
    assert clinic.fhir.writes == ["update Appointment"]
    assert _patient_status(await clinic.current(), clinic.patient_ref) == "accepted"


async def test_confirm_of_a_pending_appointment_books_it_only_when_the_others_accepted(clinic: Clinic) -> None:
    participants = (await clinic.current())["participant"]
    participants[1]["status"] = "needs-action"
    await clinic.edit(status="pending", participant=participants)
    outcome = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, None)
    assert outcome.kind == "confirmed"
    assert outcome.appointment is not None and outcome.appointment["status"] == "pending"

    participants = (await clinic.current())["participant"]
    participants[0]["status"], participants[1]["status"] = "needs-action", "accepted"
    await clinic.edit(participant=participants)
    outcome = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, None)
    assert outcome.appointment is not None and outcome.appointment["status"] == "booked"


async def test_confirm_in_appointment_response_mode(clinic: Clinic) -> None:
    w = writer(clinic, confirm_mode="appointment_response")
    outcome = await w.confirm(clinic.ref, clinic.patient_ref, clinic.version)
    assert outcome.kind == "confirmed"
    responses = await clinic.other.search("AppointmentResponse", [("appointment", clinic.ref)])
    assert [(r["participantStatus"], r["actor"]["reference"]) for r in responses] == [
        ("accepted", clinic.patient_ref)]
    assert (await w.confirm(clinic.ref, clinic.patient_ref, clinic.version)).kind == "already"
    assert await clinic.versions() == 1


# --- cancel ------------------------------------------------------------------------------------


async def test_cancel_writes_pat_crs_once_and_frees_the_slot(clinic: Clinic) -> None:
    first = await writer(clinic).cancel(clinic.ref, clinic.patient_ref, clinic.version)
    assert first.kind == "cancelled"
    now = await clinic.current()
    assert now["status"] == "cancelled"
    assert now["cancelationReason"]["coding"][0]["code"] == "pat-crs"
    assert now["cancelationReason"]["coding"][0]["display"] == "Patient: Canceled via automated reminder system"
    assert await clinic.slot_status(clinic.slots[0]) == "free"
    assert await clinic.versions() == 2

    second = await writer(clinic).cancel(clinic.ref, clinic.patient_ref, now["meta"]["versionId"])
    assert second.kind == "already"
    assert await clinic.versions() == 2


@pytest.mark.parametrize("change", ["fulfilled", "past"])
async def test_cancel_or_confirm_of_a_fulfilled_or_past_appointment_is_not_allowed(
    clinic: Clinic, change: str
) -> None:
    if change == "fulfilled":
        await clinic.edit(status="fulfilled")
        w = writer(clinic)
    else:
        w = writer(clinic, now=lambda: datetime.now(UTC) + timedelta(days=30))
    before = await clinic.versions()
    for outcome in (await w.cancel(clinic.ref, clinic.patient_ref, None),
                    await w.confirm(clinic.ref, clinic.patient_ref, None)):
        assert outcome.kind == "not_allowed"
    assert await clinic.versions() == before
    assert clinic.fhir.writes == []


# --- guards ------------------------------------------------------------------------------------


async def test_a_material_change_since_send_is_stale_and_nothing_is_written(clinic: Clinic) -> None:
    moved = datetime.fromisoformat(clinic.appointment["start"]) + timedelta(hours=1)
    await clinic.edit(start=moved.isoformat(), end=(moved + timedelta(minutes=30)).isoformat())
    outcome = await writer(clinic).cancel(clinic.ref, clinic.patient_ref, clinic.version)
    assert outcome.kind == "stale"
    assert outcome.appointment is not None and outcome.appointment["meta"]["versionId"] == "2"
    assert clinic.fhir.writes == []
    assert await clinic.versions() == 2


async def test_an_unknown_sent_version_is_stale(clinic: Clinic) -> None:
    await clinic.edit(comment="synthetic note")
    outcome = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, "99")  # vread fails: compare ids
    assert outcome.kind == "stale"


async def test_an_absolute_participant_reference_is_the_same_patient(
    clinic: Clinic, fhir_server: RunningFhirServer
) -> None:
    participants = (await clinic.current())["participant"]
    participants[0]["actor"]["reference"] = f"{fhir_server.base_url}/{clinic.patient_ref}"
    edited = await clinic.edit(participant=participants)
    outcome = await writer(clinic).confirm(clinic.ref, clinic.patient_ref, edited["meta"]["versionId"])
    assert outcome.kind == "confirmed"


async def test_reschedule_to_something_that_is_not_a_slot_offers_again(clinic: Clinic) -> None:
    outcome = await writer(clinic).reschedule(clinic.ref, clinic.patient_ref, clinic.version, "")
    assert (outcome.kind, outcome.detail) == ("no_slots", "not a slot reference")
    assert clinic.fhir.writes == []


async def test_a_foreign_patient_is_not_allowed(clinic: Clinic) -> None:
    outcome = await writer(clinic).cancel(clinic.ref, "Patient/someone-else", clinic.version)
    assert (outcome.kind, outcome.detail) == ("not_allowed", "not a participant")
    assert clinic.fhir.writes == []
    assert await clinic.versions() == 1


# --- conflicts and hand-off ------------------------------------------------------------------


async def test_a_conflict_that_persists_becomes_a_task_on_the_appointment(clinic: Clinic) -> None:
    async def clinic_always_first(operation: str) -> None:
        await clinic.edit(comment=f"synthetic edit {len(clinic.fhir.writes)}")

    clinic.fhir.before_write = clinic_always_first
    outcome = await writer(clinic, conflict_retries=2).cancel(clinic.ref, clinic.patient_ref, clinic.version)

    assert outcome.kind == "handoff"
    assert len(clinic.fhir.writes) == 3
    assert outcome.task_ref is not None
    task = await clinic.other.read("Task", outcome.task_ref.split("/")[1])
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "routine")
    assert task["focus"]["reference"] == clinic.ref
    assert task["for"]["reference"] == clinic.patient_ref
    assert task["description"] == "patient-requested-cancel; write conflict"
    assert (await clinic.current())["status"] == "booked"


async def test_handoff_task_closes_when_staff_complete_it(clinic: Clinic) -> None:
    w = writer(clinic)
    task_ref = await w.handoff(patient_ref=clinic.patient_ref, focus_ref=clinic.ref,
                               reason="patient-asked-for-staff", urgent=True)
    assert await w.task_open(task_ref)
    task = await clinic.other.read("Task", task_ref.split("/")[1])
    assert task["priority"] == "urgent"
    await clinic.other.update({**task, "status": "completed"}, if_match=task["meta"]["versionId"])
    assert not await w.task_open(task_ref)
    with pytest.raises(ValueError):
        await w.handoff(patient_ref=clinic.patient_ref, focus_ref=None, reason="Synthetic Testpatient said",
                        urgent=False)


async def test_a_retried_handoff_finds_its_task_instead_of_creating_another(clinic: Clinic) -> None:
    w = writer(clinic)
    first = await w.handoff(patient_ref=clinic.patient_ref, focus_ref=clinic.ref, reason="patient-asked-for-staff",
                            urgent=False, request_key="handoff:wamid.synthetic-retry-1")
    again = await w.handoff(patient_ref=clinic.patient_ref, focus_ref=clinic.ref, reason="patient-asked-for-staff",
                            urgent=False, request_key="handoff:wamid.synthetic-retry-1")
    other = await w.handoff(patient_ref=clinic.patient_ref, focus_ref=clinic.ref, reason="patient-asked-for-staff",
                            urgent=False, request_key="handoff:wamid.synthetic-retry-2")
    assert first == again and other != first


# --- reschedule --------------------------------------------------------------------------------


async def _booked_on(clinic: Clinic) -> list[Resource]:
    found = await clinic.other.search("Appointment", [("patient", clinic.patient_ref), ("status", "booked")])
    return found


async def test_free_slots_lists_the_schedule_s_other_free_slots_soonest_first(clinic: Clinic) -> None:
    outcome = await writer(clinic, max_slots=3).free_slots(clinic.ref, clinic.patient_ref, clinic.version)
    assert outcome.kind == "slots"
    assert [o.slot_ref for o in outcome.slots] == [reference(s) for s in clinic.slots[1:4]]
    assert all(o.start.tzinfo is not None and o.end > o.start for o in outcome.slots)

    short = await writer(clinic, reschedule_window=timedelta(hours=1)).free_slots(
        clinic.ref, clinic.patient_ref, clinic.version)
    assert (short.kind, short.slots) == ("no_slots", ())


@pytest.mark.parametrize("transactions", [True, False])
async def test_reschedule_moves_the_booking_atomically(clinic: Clinic, transactions: bool) -> None:
    options: dict[str, Any] = {}
    if not transactions:
        statement = await clinic.other.capabilities()
        statement["rest"][0]["interaction"] = []
        options["capabilities"] = CapabilityCache.fixed(clinic.fhir, ServerCapabilities(statement))
    new_slot = clinic.slots[2]
    outcome = await writer(clinic, **options).reschedule(clinic.ref, clinic.patient_ref, clinic.version,
                                                         reference(new_slot))
    assert outcome.kind == "rescheduled", outcome.detail
    assert clinic.fhir.writes[0] == ("transaction" if transactions else "update Slot")
    assert outcome.appointment is not None
    new = await clinic.other.read("Appointment", outcome.appointment["id"])
    assert new["status"] == "booked" and new["slot"] == [{"reference": reference(new_slot)}]
    assert new["start"] == new_slot["start"] and new["end"] == new_slot["end"]
    assert _patient_status(new, clinic.patient_ref) == "accepted"
    old = await clinic.current()
    assert old["status"] == "cancelled" and old["cancelationReason"]["coding"][0]["code"] == "pat-crs"
    assert await clinic.slot_status(new_slot) == "busy"
    assert await clinic.slot_status(clinic.slots[0]) == "free"
    assert [a["id"] for a in await _booked_on(clinic)] == [new["id"]]  # exactly one booking


async def test_reschedule_to_a_slot_taken_meanwhile_offers_again(clinic: Clinic) -> None:
    target = clinic.slots[3]

    async def someone_takes_it(operation: str) -> None:
        now = await clinic.other.read("Slot", target["id"])
        if now["status"] == "free":
            await clinic.other.update({**now, "status": "busy"}, if_match=now["meta"]["versionId"])

    clinic.fhir.before_write = someone_takes_it
    outcome = await writer(clinic).reschedule(clinic.ref, clinic.patient_ref, clinic.version, reference(target))
    assert (outcome.kind, outcome.detail) == ("no_slots", "slot taken")
    assert clinic.fhir.writes == ["transaction"]  # refused with 412 (rolled back), re-read: taken
    assert (await clinic.current())["status"] == "booked"
    assert [a["id"] for a in await _booked_on(clinic)] == [clinic.appointment["id"]]
    assert await clinic.slot_status(clinic.slots[0]) == "busy"


async def test_reschedule_with_a_persistent_conflict_hands_off_and_keeps_one_booking(clinic: Clinic) -> None:
    async def clinic_always_first(operation: str) -> None:
        await clinic.edit(comment=f"synthetic edit {len(clinic.fhir.writes)}")

    clinic.fhir.before_write = clinic_always_first
    outcome = await writer(clinic, conflict_retries=1).reschedule(
        clinic.ref, clinic.patient_ref, clinic.version, reference(clinic.slots[1]))
    assert outcome.kind == "handoff" and outcome.task_ref
    assert outcome.detail == "patient-requested-reschedule; write conflict"
    assert [a["id"] for a in await _booked_on(clinic)] == [clinic.appointment["id"]]
    assert await clinic.slot_status(clinic.slots[1]) == "free"


async def test_sequential_reschedule_undoes_the_new_booking_when_the_old_cannot_be_cancelled(
    clinic: Clinic,
) -> None:
    statement = await clinic.other.capabilities()
    statement["rest"][0]["interaction"] = []
    caps = CapabilityCache.fixed(clinic.fhir, ServerCapabilities(statement))

    async def clinic_edits_before_each_cancel(operation: str) -> None:
        if operation == "patch Appointment":
            await clinic.edit(comment=f"synthetic edit {len(clinic.fhir.writes)}")

    clinic.fhir.before_write = clinic_edits_before_each_cancel
    outcome = await writer(clinic, capabilities=caps, conflict_retries=0).reschedule(
        clinic.ref, clinic.patient_ref, clinic.version, reference(clinic.slots[1]))
    assert outcome.kind == "handoff"
    assert [a["id"] for a in await _booked_on(clinic)] == [clinic.appointment["id"]]
    assert await clinic.slot_status(clinic.slots[1]) == "free"


def test_outcome_is_frozen() -> None:
    outcome = WriteOutcome("already", None)
    with pytest.raises(AttributeError):
        outcome.kind = "stale"  # type: ignore[misc]
