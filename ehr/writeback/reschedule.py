"""Moving a booking to another Slot without ever leaving the patient with two bookings or none.

With transaction support (https://hl7.org/fhir/R4/http.html#transaction) the new booking, the new
Slot going busy, the old booking's cancellation and its Slots going free are one Bundle, every PUT
carrying ``ifMatch``. Without it: hold the new Slot, book, cancel the old booking, free its Slots;
if the old booking cannot be cancelled the new one is undone, and if undoing fails a person must
finish it (:class:`ehr.writeback.outcome.HandoffNeeded`).
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from ehr.client import FhirClient
from ehr.errors import FhirConflictError, FhirError
from ehr.writeback.appointment import ERROR_CANCELLATION, PATIENT_CANCELLED_VIA_REMINDER
from ehr.writeback.elements import Resource, as_dict, as_list, id_of, instant, same_ref, version
from ehr.writeback.outcome import HandoffNeeded, WriteOutcome

logger = logging.getLogger(__name__)


def new_booking(old: Resource, slot: Resource, patient_ref: str, now: datetime) -> Resource:
    """The replacement Appointment: same participants and clinical coding, the new slot's times.
    Business identifiers, narrative and the cancellation reason are not carried over."""
    booking = {k: copy.deepcopy(v) for k, v in old.items()
               if k not in ("id", "meta", "text", "identifier", "cancelationReason", "slot", "start", "end",
                            "minutesDuration", "created")}
    tags = {k: v for k, v in as_dict(old.get("meta")).items() if k in ("tag", "security")}
    if tags:
        booking["meta"] = copy.deepcopy(tags)
    start, end = instant(slot.get("start")), instant(slot.get("end"))
    booking.update({"status": "booked", "slot": [{"reference": f"Slot/{slot['id']}"}],
                    "start": slot["start"], "end": slot["end"], "created": now.date().isoformat()})
    if start and end:
        booking["minutesDuration"] = int((end - start).total_seconds() // 60)
    for participant in as_list(booking.get("participant")):
        if isinstance(participant, dict) and same_ref(participant.get("actor"), patient_ref):
            participant["status"] = "accepted"
    return booking


async def reschedule_in_transaction(
    fhir: FhirClient, current: Resource, booking: Resource, new_slot: Resource, old_slots: list[Resource],
) -> WriteOutcome:
    """Books, holds the new Slot, cancels ``current`` and frees ``old_slots`` in one transaction."""
    old_version = version(current)
    if old_version is None or version(new_slot) is None:
        raise HandoffNeeded("no version id")
    entries: list[Resource] = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": booking,
         "request": {"method": "POST", "url": "Appointment"}},
        _put(new_slot, {"status": "busy"}),
        _put(current, {"status": "cancelled", "cancelationReason": {"coding": [PATIENT_CANCELLED_VIA_REMINDER]}}),
        *(_put(slot, {"status": "free"}) for slot in old_slots),
    ]
    response = await fhir.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    # Response entries follow the request's order (https://hl7.org/fhir/R4/http.html#transaction-response).
    first = as_dict((as_list(response.get("entry")) or [{}])[0])
    created = first.get("resource")
    if not isinstance(created, dict) or created.get("resourceType") != "Appointment":
        location = str(as_dict(first.get("response")).get("location", ""))
        created = await fhir.read("Appointment", id_of(location, "Appointment"))
    logger.info("rescheduled Appointment/%s v%s -> Appointment/%s on Slot/%s (transaction)", current["id"],
                old_version, created.get("id"), new_slot["id"])
    return _rescheduled(current, created, new_slot)


async def reschedule_in_steps(
    fhir: FhirClient, current: Resource, booking: Resource, new_slot: Resource, old_slots: list[Resource], *,
    cancel: Callable[[Resource], Awaitable[Resource]], release: Callable[[Resource], Awaitable[object]],
) -> WriteOutcome:
    """No transactions: hold the new slot (If-Match), book, ``cancel`` the old booking, free its
    slots (a conflicting one goes to ``release``); if the old booking cannot be cancelled, undo the
    new one; if undoing fails, :class:`HandoffNeeded`."""
    busy = await fhir.update({**new_slot, "status": "busy"}, if_match=version(new_slot))
    try:
        created = await fhir.create(booking)
    except FhirError:
        await fhir.update({**busy, "status": "free"}, if_match=version(busy))
        raise
    try:
        cancelled = await cancel(current)
    except FhirError as error:
        logger.info("reschedule of Appointment/%s: cancelling old failed (%s); undoing Appointment/%s",
                    current["id"], type(error).__name__, created.get("id"))
        try:
            await fhir.update({**created, "status": "cancelled", "cancelationReason": {"coding": [ERROR_CANCELLATION]}},
                              if_match=version(created))
            await fhir.update({**busy, "status": "free"}, if_match=version(busy))
        except FhirError as undo_error:
            logger.warning("undo of Appointment/%s failed (%s)", created.get("id"), type(undo_error).__name__)
            raise HandoffNeeded("reschedule incomplete; two bookings") from undo_error
        raise  # a conflict retries the whole tap; anything else propagates
    for slot in old_slots:
        try:
            await fhir.update({**slot, "status": "free"}, if_match=version(slot))
        except FhirConflictError:
            await release({"id": current["id"], "slot": [{"reference": f"Slot/{slot['id']}"}]})
    return _rescheduled(cancelled, created, new_slot)


def _rescheduled(old: Resource, created: Resource, new_slot: Resource) -> WriteOutcome:
    return WriteOutcome("rescheduled", created, detail=f"old=Appointment/{old['id']} new=Appointment/"
                                                       f"{created.get('id')} slot=Slot/{new_slot['id']}")


def _put(resource: Resource, changes: Resource) -> Resource:
    """A transaction entry that PUTs ``resource`` with ``changes``, conditional on its current version."""
    return {"fullUrl": f"{resource['resourceType']}/{resource['id']}", "resource": {**resource, **changes},
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}",
                        "ifMatch": f'W/"{version(resource)}"'}}
