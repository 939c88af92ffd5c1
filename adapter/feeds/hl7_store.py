"""The durable side of the MLLP listener: :class:`ehr.hl7.ports.MessageStore` on the database.

Per HL7 v2.5.1 2.9.2 the receiver acknowledges once it has taken responsibility for a message, so
:meth:`Hl7MessageStore.store` returns ``STORED`` only after one transaction committed:

- the message row, its raw text encrypted like inbound WhatsApp content (:class:`FieldCipher`, the
  ciphertext bound to the sending facility and MSH-10), deduplicated by the unique key on
  (sending facility, MSH-10): a copy already committed is ``DUPLICATE`` and changes nothing;
- per appointment (sending facility, filler id) the last message applied, in the original order
  (:func:`ehr.hl7.ordering.is_stale`: MSH-7, then the trigger): a message older than it is stored
  and acknowledged, as ``stale``, but never applied (an S12 resent after its S15 does not revive
  the appointment). Messages about one appointment are stored one transaction at a time, so their
  ids follow this order and processing in id order applies them as they were sent;
- the receipt's audit entries, like a FHIR read (BALP PatientRead, :func:`adapter.audit.fhir_access.read_entry`):
  one per appointment or report the message is about, agent ``ehr``.

A database fault raises, and the listener answers ``AE`` so the engine resends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Insert
from sqlmodel import Session

from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.feeds.hl7_resources import appointment_id, mrn_patient_id, receipt_refs
from adapter.feeds.hl7_tables import Hl7Appointment, Hl7Message
from adapter.security.crypto import FieldCipher
from adapter.storage.db import table_of, transaction, utcnow
from ehr.hl7.events import AppointmentEvent, ParsedMessage
from ehr.hl7.ordering import is_stale
from ehr.hl7.ports import StoreResult

RECEIPT_AGENT = "ehr"  # the scheduling or lab system that sent the message
ADVISORY_SPACE = 0x484C3741  # "HL7A": the first key of the per-appointment advisory locks


def raw_context(facility: str, control_id: str) -> str:
    """The encryption context of a message's raw text: the ciphertext opens only for its own row."""
    return f"hl7_message.raw_enc:{facility}:{control_id}"


class Hl7MessageStore:
    """Commits each accepted message before its ACK; ``on_stored`` runs after a commit (wakes processing).

    ``patient_by_identifier``: the patient's reference is resolved later against the FHIR Patient,
    so the receipt names no patient reference yet (the decide step's reads do).
    """

    def __init__(self, engine: Engine, cipher: FieldCipher, *, on_stored: Callable[[], None] | None = None,
                 patient_by_identifier: bool = False) -> None:
        self.engine = engine
        self.cipher = cipher
        self.on_stored = on_stored
        self.patient_by_identifier = patient_by_identifier

    async def store(self, message: ParsedMessage) -> StoreResult:
        result = await asyncio.to_thread(self.store_now, message)
        if result is StoreResult.STORED and self.on_stored is not None:
            self.on_stored()
        return result

    def store_now(self, message: ParsedMessage) -> StoreResult:
        """:meth:`store` in the calling thread: one transaction, committed when this returns STORED."""
        now = utcnow()
        row = {"facility": message.facility, "control_id": message.control_id,
               "message_type": message.message_type, "trigger": message.trigger,
               "message_time": message.message_time, "state": "pending", "attempts": 0,
               "raw_enc": self.cipher.encrypt(message.raw, context=raw_context(message.facility, message.control_id)),
               "next_attempt_at": now, "received_at": now}
        with transaction(self.engine) as session:
            _serialise_appointments(session, message)
            messages = table_of(Hl7Message)
            inserted = session.execute(_ignoring(session, messages, ["facility", "control_id"], row)
                                       .returning(messages.c.id)).scalars().all()
            if not inserted:
                return StoreResult.DUPLICATE
            message_id = int(inserted[0])
            stale = any([_keep_order(session, event, message_id, message.application) for event in message.events
                         if isinstance(event, AppointmentEvent)])
            if stale:
                session.execute(update(messages).where(messages.c.id == message_id).values(state="stale"))
            record(session, *self._receipt(message, message_id, stale), at=now)
        return StoreResult.STORED

    def _receipt(self, message: ParsedMessage, message_id: int, stale: bool) -> list[AuditEntry]:
        entries = []
        for reference, patient in receipt_refs(message):
            patient_ref = None if self.patient_by_identifier else f"Patient/{mrn_patient_id(patient)}"
            entries.append(AuditEntry(
                kind=Kind.PATIENT_READ, action=Action.READ, agent=RECEIPT_AGENT, patient_ref=patient_ref,
                entity_ref=f"{reference}/_history/{message_id}",
                detail={"step": "hl7-receipt", "message": f"{message.message_type}^{message.trigger}"[:16],
                        "stale": stale}))
        return entries


def _serialise_appointments(session: Session, message: ParsedMessage) -> None:
    """On PostgreSQL, one transaction at a time per appointment, from before the message row gets its id
    until the commit: ids then follow the order check, and processing in id order applies the messages
    in their original order. (SQLite has one writer at a time already.)"""
    if session.get_bind().dialect.name != "postgresql":
        return
    for key in sorted({event.key for event in message.events if isinstance(event, AppointmentEvent)}):
        digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).digest()
        session.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"),
                        {"space": ADVISORY_SPACE, "key": int.from_bytes(digest[:4], "big", signed=True)})


def _keep_order(session: Session, event: AppointmentEvent, message_id: int, application: str) -> bool:
    """Records ``event`` as its appointment's latest unless an applied message is later; True if stale."""
    table = table_of(Hl7Appointment)
    values = {"message_time": event.message_time, "trigger": event.trigger, "message_id": message_id}
    row = {"facility": event.facility, "filler_id": event.filler_id, "placer_id": event.placer_id,
           "application": application[:180],
           "resource_id": appointment_id(event.facility, event.filler_id), **values}
    first = session.execute(_ignoring(session, table, ["facility", "filler_id"], row)
                            .returning(table.c.message_id)).scalars().all()
    if first:
        return False
    key = (table.c.facility == event.facility) & (table.c.filler_id == event.filler_id)
    # FOR UPDATE: two connections storing messages of one appointment compare against each other's result.
    current = session.execute(select(table.c.message_time, table.c.trigger).where(key).with_for_update()).one()
    latest = dataclasses.replace(event, message_time=current.message_time, trigger=current.trigger)
    if is_stale(event, latest):
        return True
    session.execute(update(table).where(key).values(**values))
    return False


def _ignoring(session: Session, table: Any, unique: list[str], row: dict[str, Any]) -> Insert:
    """INSERT ... ON CONFLICT (unique) DO NOTHING, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table).values(**row).on_conflict_do_nothing(index_elements=unique)
    return sqlite_insert(table).values(**row).on_conflict_do_nothing(index_elements=unique)
