"""The port the service implements for the MLLP listener: durable storage of each accepted message.

The listener answers ``AA`` only after :meth:`MessageStore.store` returned ``STORED`` or
``DUPLICATE`` (HL7 v2.5.1 2.9.2: the receiver acknowledges once it has taken responsibility for the
message), ``AE`` when it returned ``FAILED`` or raised, so the sending engine resends.

What an implementation is expected to do (the listener cannot check it):

- commit before returning ``STORED``: the raw text (encrypted like other inbound content), the
  events, and an audit record of the receipt, in one transaction;
- deduplicate on :attr:`ParsedMessage.dedupe_key` (sending facility, MSH-10): a second copy of a
  committed message returns ``DUPLICATE`` and changes nothing;
- keep the original order per :attr:`AppointmentEvent.key` (:func:`ehr.hl7.ordering.is_stale`:
  MSH-7, then the trigger), since an engine's resend can arrive after a later message for the
  same appointment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from ehr.hl7.events import ParsedMessage


class StoreResult(StrEnum):
    STORED = "stored"  # committed now
    DUPLICATE = "duplicate"  # this (facility, MSH-10) was committed before; nothing changed
    FAILED = "failed"  # not committed (database down, ...): the sender must resend


class MessageStore(Protocol):
    async def store(self, message: ParsedMessage) -> StoreResult:
        """Commits ``message`` (or finds it already committed); may raise instead of returning FAILED."""
        ...
