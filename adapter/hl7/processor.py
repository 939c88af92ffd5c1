"""Processing stored HL7 v2 messages: each becomes the FHIR-shaped Appointment or DiagnosticReport the
decide step reads (:mod:`adapter.feeds.hl7_resources`), decided in batches like FHIR events.

A batch of pending messages (id order, which is the original order per appointment: later-sent
messages that arrived late were stored as ``stale`` and are never claimed) is claimed with a lease
in one statement per table, decrypted and parsed again with the current field positions, its
patients resolved, and decided in one transaction (:meth:`adapter.scheduling.decide.Decider.record_batch`).
As a FHIR event is decided on the resource's current version, only the batch's last message about
each appointment or report is decided; the earlier ones are finished with it.
Then the batch's messages are finished in one UPDATE, which drops their raw text as inbound WhatsApp
content is dropped once processed (a stale or dead message keeps it for the operator, until
retention). A message that cannot be processed goes ``dead`` with an operator alert (:mod:`.dead`).
A message already applied (its appointment's decided version is this message or a later one) is finished
without deciding again, so a crash between the two transactions repeats nothing.

The patient (``hl7_patient_source``): ``message`` gives the Patient PID describes (PID-3 MRN, PID-13
phone, PID-15 language) under ``Patient/<MRN>``; ``fhir`` searches the FHIR Patient by the PID-3
identifier (audited as a BALP PatientQuery) and uses its reference, telecom and language; none or
several found decide with no Patient (the skip ``patient_not_found``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from adapter.audit.fhir_access import query_entry
from adapter.audit.trail import AuditEntry, record
from adapter.feeds.hl7_resources import decide_resource, message_patient, mrn_patient_id, resource_id
from adapter.feeds.hl7_store import raw_context
from adapter.feeds.hl7_tables import HL7_CLAIMABLE, Hl7Message
from adapter.hl7.dead import bury
from adapter.scheduling.decide import Decider
from adapter.scheduling.decision import DecideItem
from adapter.security.crypto import FieldCipher
from adapter.storage.claimable import in_states, indexed_by
from adapter.storage.db import table_of, transaction, utcnow
from ehr.client import FhirClient
from ehr.hl7.config import Hl7Config
from ehr.hl7.events import AppointmentEvent, PatientRef, ResultEvent
from ehr.hl7.mapping import patient_identifier
from ehr.hl7.messages import parse_message

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 20
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class _Claimed:
    id: int
    facility: str
    control_id: str
    raw_enc: str
    attempts: int


def _state_key(event: AppointmentEvent | ResultEvent) -> tuple[str, str]:
    kind = "Appointment" if isinstance(event, AppointmentEvent) else "DiagnosticReport"
    return kind, resource_id(event.facility, event.filler_id, kind)


def _applied(version: str | None, message_id: int) -> bool:
    """The decided version is this message or a later one: applied before a crash, or by another instance."""
    return version is not None and version.isdigit() and int(version) >= message_id


class Hl7Processor:
    """Decides stored messages; ``on_queued`` runs when a batch queued messages (wakes the sender)."""

    def __init__(self, engine: Engine, cipher: FieldCipher, config: Hl7Config, decider: Decider, *,
                 patient_source: Literal["message", "fhir"] = "message", fhir: FhirClient | None = None,
                 batch: int = 100, lease: timedelta = LEASE, on_queued: Callable[[], None] | None = None) -> None:
        if patient_source == "fhir" and fhir is None:
            raise ValueError("hl7_patient_source=fhir needs a FHIR client")
        self.engine, self.cipher, self.config, self.decider = engine, cipher, config, decider
        self.patient_source, self.fhir = patient_source, fhir
        self.batch, self.lease, self.on_queued = batch, lease, on_queued

    async def run_once(self) -> int:
        """One batch; returns how many messages it claimed."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        dead: list[tuple[int, str]] = []
        events: list[tuple[int, AppointmentEvent | ResultEvent]] = []
        for row in claimed:
            try:
                raw = self.cipher.decrypt(row.raw_enc, context=raw_context(row.facility, row.control_id))
                events.extend((row.id, event) for event in parse_message(raw, self.config).events)
            except Exception as error:  # the positions changed since it was stored, or the key is gone
                log.warning("HL7 message %s cannot be processed: %s", row.id, type(error).__name__)
                dead.append((row.id, type(error).__name__))
        try:
            queued, audit = await self._decide(events)
        except Exception as error:
            log.exception("an HL7 batch of %d failed; retried later", len(claimed))
            await asyncio.to_thread(self._retry, claimed, type(error).__name__)
            return len(claimed)
        done = [row.id for row in claimed if row.id not in {message_id for message_id, _ in dead}]
        await asyncio.to_thread(self._finish, done, dead, audit)
        if queued and self.on_queued is not None:
            self.on_queued()
        return len(claimed)

    async def _decide(self, events: list[tuple[int, AppointmentEvent | ResultEvent]]) -> tuple[int, list[AuditEntry]]:
        """Decides the events not applied yet, in one transaction; returns (messages queued, searches' audit)."""
        audit: list[AuditEntry] = []
        if not events:
            return 0, audit
        # The current state only, as a FHIR event is re-read: of several messages about one appointment in
        # the batch, the last (ids follow the sending order, adapter.feeds.hl7_store) says where it stands.
        latest = {_state_key(event): (message_id, event) for message_id, event in events}
        seen = await asyncio.to_thread(self.decider.last_seen_many,
                                       [{"resourceType": kind, "id": rid} for kind, rid in latest])
        due = [(message_id, event) for key, (message_id, event) in latest.items()
               if not _applied(seen.get(key, (None, None))[0], message_id)]
        patients = await self._patients([event.patient for _, event in due], audit)
        items = [DecideItem(decide_resource(event, self.config, message_id, patients[event.patient][0]),
                            patients[event.patient][1]) for message_id, event in due]
        decisions = await asyncio.to_thread(self.decider.record_batch, items) if items else []
        return sum(len(decision.queued) for decision in decisions), audit

    async def _patients(self, refs: Sequence[PatientRef],
                        audit: list[AuditEntry]) -> dict[PatientRef, tuple[str, dict[str, Any] | None]]:
        """Per patient of the batch: (Patient id, Patient resource or None)."""
        distinct = list(dict.fromkeys(refs))
        if self.patient_source == "message":
            return {ref: (mrn_patient_id(ref), message_patient(ref)) for ref in distinct}
        found = await asyncio.gather(*(self._search(ref, audit) for ref in distinct))
        return dict(zip(distinct, found, strict=True))

    async def _search(self, ref: PatientRef, audit: list[AuditEntry]) -> tuple[str, dict[str, Any] | None]:
        assert self.fhir is not None
        identifier = patient_identifier(ref)
        params = [("identifier", f"{identifier['system']}|{identifier['value']}")]
        found = [r for r in await self.fhir.search("Patient", params) if r.get("resourceType") == "Patient"]
        patient = found[0] if len(found) == 1 else None
        patient_id = str(patient["id"]) if patient is not None else mrn_patient_id(ref)
        audit.append(query_entry("Patient", params, patient_ref=f"Patient/{patient_id}" if patient else None,
                                 step="hl7-patient", results=len(found)))
        return patient_id, patient

    def _claim(self) -> list[_Claimed]:
        """Leases the next pending messages in id order: one SELECT and one UPDATE."""
        now = utcnow()
        claimable = indexed_by(Hl7Message, "ix_hl7_message_claimable")
        table = table_of(Hl7Message)
        with transaction(self.engine) as session:
            rows = session.execute(
                select(claimable.id, claimable.facility, claimable.control_id, claimable.raw_enc, claimable.attempts)
                .where(in_states(claimable.state, HL7_CLAIMABLE), claimable.next_attempt_at <= now,
                       (claimable.lease_until.is_(None)) | (claimable.lease_until < now))
                .order_by(claimable.id).limit(self.batch).with_for_update(skip_locked=True)).all()
            claimed = [_Claimed(*row) for row in rows]
            if claimed:
                session.execute(update(table).where(table.c.id.in_([row.id for row in claimed]))
                                .values(lease_until=now + self.lease, attempts=table.c.attempts + 1))
        return claimed

    def _finish(self, done: list[int], dead: list[tuple[int, str]], audit: list[AuditEntry]) -> None:
        table = table_of(Hl7Message)
        now = utcnow()
        with transaction(self.engine) as session:
            if done:
                # Like inbound WhatsApp content, the raw text goes once processed: only its row stays.
                session.execute(update(table).where(table.c.id.in_(done))
                                .values(state="done", processed_at=now, lease_until=None, raw_enc=""))
            bury(session, dead)  # each with an operator alert
            record(session, *audit)

    def _retry(self, claimed: list[_Claimed], error: str) -> None:
        table = table_of(Hl7Message)
        retry_at = utcnow() + timedelta(seconds=min(300, 2 ** min(max(row.attempts for row in claimed), 8)))
        with transaction(self.engine) as session:
            ids = [row.id for row in claimed]
            session.execute(update(table).where(table.c.id.in_(ids))
                            .values(last_error=error[:200], lease_until=None, next_attempt_at=retry_at))
            # attempts was counted up by the claim: the row's value is one more than the claimed copy's.
            bury(session, [(row.id, error) for row in claimed if row.attempts + 1 >= MAX_ATTEMPTS])
