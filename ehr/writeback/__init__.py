"""Safe write-back of a patient's button tap (Confirm / Cancel / Reschedule / Talk to staff) to the EHR.

Every write is version-aware (https://hl7.org/fhir/R4/http.html#concurrency): it carries
``If-Match: W/"<versionId>"`` of the version just read, and is a JSON Patch of the few elements
the tap changes where the server offers ``patch`` for Appointment (so a clinic's concurrent edit
of another element is never overwritten by our stale copy), else a PUT of the re-read resource.

Recipe of each tap (:mod:`.writer`): read the current Appointment → guard (the patient must be a
participant; the appointment's *material* state — status, start, end, slot — must equal the one the
patient saw when the message was sent; :mod:`.appointment`) → decide (``already`` / ``not_allowed`` /
the write) → write. A 409 or 412 means someone wrote first: re-read, re-decide, retry up to
``conflict_retries`` times; a conflict that persists, or 423/424, becomes a FHIR Task for the front
desk (kind ``handoff``, :mod:`.handoff`).

Reschedule (:mod:`.reschedule`) books the new slot and cancels the old booking in one transaction
Bundle (https://hl7.org/fhir/R4/http.html#transaction), so the patient never ends with two bookings
or none; without transaction support it books, then cancels, and undoes the booking if the cancel
fails. Free Slots are found and released by :mod:`.slots`. Logs carry ids, versions and codes only,
never PHI.
"""

from ehr.writeback.outcome import SlotOption, WriteOutcome
from ehr.writeback.writer import AppointmentWriter

__all__ = ["AppointmentWriter", "SlotOption", "WriteOutcome"]
