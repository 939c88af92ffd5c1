"""The Slots a tap reads and frees (https://hl7.org/fhir/R4/slot.html): the Schedule an appointment
books on, the free Slots a reschedule can offer, and releasing a cancelled booking's Slots with
``If-Match`` (re-read on conflict) unless another live appointment still holds them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ehr.client import FhirClient
from ehr.errors import FhirConflictError, FhirNotFoundError
from ehr.writeback.elements import Resource, id_of, instant, ref, slot_refs, version
from ehr.writeback.outcome import SlotOption

logger = logging.getLogger(__name__)


async def schedule_of(fhir: FhirClient, appointment: Resource) -> tuple[str | None, list[str]]:
    """The Schedule of the first of the appointment's Slots that names one, and all its Slot references."""
    refs = slot_refs(appointment)
    for slot_ref in refs:
        try:
            slot = await fhir.read("Slot", id_of(slot_ref, "Slot"))
        except FhirNotFoundError:
            continue
        if schedule := ref(slot.get("schedule")):
            return schedule, refs
    return None, refs


async def search_free(fhir: FhirClient, schedule_ref: str, *, now: datetime, window: timedelta, max_slots: int,
                      exclude: list[str]) -> tuple[SlotOption, ...]:
    """Free Slots on ``schedule_ref`` from ``now`` to ``now + window``, soonest first, at most ``max_slots``."""
    params = [("schedule", schedule_ref), ("status", "free"),
              ("start", f"ge{now.isoformat(timespec='seconds')}"),
              ("start", f"le{(now + window).isoformat(timespec='seconds')}"),
              ("_sort", "start"), ("_count", str(max_slots + len(exclude)))]
    options: list[SlotOption] = []
    for slot in await fhir.search("Slot", params, max_pages=1):
        start, end = instant(slot.get("start")), instant(slot.get("end"))
        slot_ref = f"Slot/{slot.get('id')}"
        if slot.get("status") != "free" or slot_ref in exclude or start is None or end is None or start < now:
            continue
        options.append(SlotOption(slot_ref, start, end))
    options.sort(key=lambda o: o.start)
    return tuple(options[:max_slots])


async def slot_shared(fhir: FhirClient, slot: Resource, appointment: Resource) -> bool:
    """Another live appointment on the same (overbooked) slot keeps it busy."""
    others = await fhir.search("Appointment", [("slot", f"Slot/{slot['id']}")], max_pages=1)
    return any(a.get("id") != appointment.get("id") and a.get("status") not in
               ("cancelled", "entered-in-error", "noshow") for a in others)


async def release_slots(fhir: FhirClient, appointment: Resource, *, conflict_retries: int) -> str | None:
    """Slot.status → free for each of the appointment's busy, unshared Slots (If-Match, re-read on
    conflict). Returns the first Slot whose release still conflicted after the retries (the rest are
    left as they are), or None when every Slot is done."""
    for slot_ref in slot_refs(appointment):
        for _attempt in range(conflict_retries + 1):
            try:
                slot = await fhir.read("Slot", id_of(slot_ref, "Slot"))
                if slot.get("status") != "busy" or await slot_shared(fhir, slot, appointment):
                    break
                await fhir.update({**slot, "status": "free"}, if_match=version(slot))
                logger.info("freed %s (was v%s)", slot_ref, version(slot))
                break
            except FhirConflictError:
                continue
        else:
            return slot_ref
    return None
