"""Taps on HL7-fed appointments written back by the path the hospital has, never silently dropped.

An appointment the HL7 feed decided is ``Appointment/hl7-…`` (:mod:`adapter.feeds.hl7_resources`):
no FHIR server holds it under that id. For its confirm, cancel and reschedule taps,
:class:`Hl7AppointmentWriter` tries in order:

1. the FHIR API (``hl7_writeback_via_fhir``): the Appointment found by its filler identifier
   (https://hl7.org/fhir/R4/search.html#token, ``identifier=system|value``) is written as any
   FHIR-fed one (:class:`ehr.writeback.AppointmentWriter`);
2. an ``SRM^S03``/``SRM^S04`` (:mod:`adapter.hl7.srm`) to ``hl7_srm_host`` over MLLP, its ACK
   awaited: anything but ``AA`` raises, so the action is retried and, after its last attempt,
   raises an operator alert and the patient is told the clinic will call;
3. otherwise an operator alert (a staff work item naming the facility and filler id) and the
   hand-off answer to the patient.

An appointment its feed already ended (S15, S17, S26) is answered without writing anything. Every
other appointment goes to :class:`~ehr.writeback.AppointmentWriter` unchanged.

A hand-off ("talk to staff") about an HL7-fed appointment whose patient is known only by MRN
(``hl7_patient_source=message``: no FHIR Patient, so no FHIR Task could name them, and often no FHIR
server at all) becomes an operator alert, the staff work item, instead of a FHIR Task: the patient
always reaches a person. Its reference ``OperatorAlert/<id>`` stands for the Task; the hand-off is
open until an operator acknowledges the alert.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from adapter.feeds.hl7_tables import Hl7Appointment
from adapter.hl7.srm import SrmTrigger, srm_message
from adapter.ops.alerts import raise_alert
from adapter.ops.tables import OperatorAlert
from adapter.settings import Settings
from adapter.settings.hl7 import load_hl7_mapping
from adapter.storage.db import table_of, transaction, utcnow
from ehr.client import FhirClient
from ehr.hl7.client import send_message
from ehr.hl7.events import TERMINAL_TRIGGERS
from ehr.hl7.mapping import identifier_system
from ehr.writeback import AppointmentWriter, WriteOutcome

log = logging.getLogger(__name__)
HL7_PREFIX = "Appointment/hl7-"
ALERT_PREFIX = "OperatorAlert/"  # a hand-off's work item when no FHIR Task can be made
SRM_ACK_SECONDS = 30.0
SRM_TRIES = 3
Tap = Literal["confirm", "cancel", "reschedule"]


class SrmRefusedError(Exception):
    """The scheduling system did not accept the request (``AE``/``AR``): tried again later."""


def appointment_writer(settings: Settings, engine: Engine, fhir: FhirClient, **options: Any) -> AppointmentWriter:
    """The service's writer: HL7-aware when the HL7 feed is on (composition root)."""
    if settings.hl7_enabled:
        return Hl7AppointmentWriter(fhir, engine=engine, settings=settings, **options)
    return AppointmentWriter(fhir, **options)


class Hl7AppointmentWriter(AppointmentWriter):
    def __init__(self, fhir: FhirClient, *, engine: Engine, settings: Settings, **options: Any) -> None:
        super().__init__(fhir, **options)
        self._engine = engine
        self._via_fhir = settings.hl7_writeback_via_fhir
        self._srm = (settings.hl7_srm_host, settings.hl7_srm_port) if settings.hl7_srm_host else None
        self._config = load_hl7_mapping(settings.hl7_mapping_file)
        self._patients_by_mrn = settings.hl7_patient_source == "message"

    async def handoff(self, *, patient_ref: str, focus_ref: str | None, reason: str, urgent: bool,
                      request_key: str | None = None) -> str:
        if not (self._patients_by_mrn and focus_ref and focus_ref.startswith(HL7_PREFIX)):
            return await super().handoff(patient_ref=patient_ref, focus_ref=focus_ref, reason=reason, urgent=urgent,
                                         request_key=request_key)
        return await asyncio.to_thread(self._handoff_item, patient_ref, focus_ref, reason, urgent, request_key)

    async def task_open(self, task_ref: str) -> bool:
        if not task_ref.startswith(ALERT_PREFIX):
            return await super().task_open(task_ref)
        return await asyncio.to_thread(self._alert_open, int(task_ref.removeprefix(ALERT_PREFIX)))

    async def confirm(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        if not appointment_ref.startswith(HL7_PREFIX):
            return await super().confirm(appointment_ref, patient_ref, version_at_send)
        return await self._hl7_tap("confirm", appointment_ref, patient_ref, version_at_send)

    async def cancel(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        if not appointment_ref.startswith(HL7_PREFIX):
            return await super().cancel(appointment_ref, patient_ref, version_at_send)
        return await self._hl7_tap("cancel", appointment_ref, patient_ref, version_at_send)

    async def free_slots(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        if not appointment_ref.startswith(HL7_PREFIX):
            return await super().free_slots(appointment_ref, patient_ref, version_at_send)
        return await self._hl7_tap("reschedule", appointment_ref, patient_ref, version_at_send)

    async def reschedule(self, appointment_ref: str, patient_ref: str, version_at_send: str | None,
                         slot_ref: str) -> WriteOutcome:
        if not appointment_ref.startswith(HL7_PREFIX):
            return await super().reschedule(appointment_ref, patient_ref, version_at_send, slot_ref)
        found = await self._fhir_appointment(appointment_ref) if self._via_fhir else None
        if found is not None:
            return await super().reschedule(found, patient_ref, None, slot_ref)
        return await self._hl7_tap("reschedule", appointment_ref, patient_ref, version_at_send)

    async def _hl7_tap(self, tap: Tap, appointment_ref: str, patient_ref: str,
                       version_at_send: str | None) -> WriteOutcome:
        fed = await asyncio.to_thread(self._fed, appointment_ref)
        if fed is None:  # no message about it was ever applied (retention, or a forged reference)
            return WriteOutcome("not_allowed", None, detail="unknown hl7 appointment")
        if fed.trigger in TERMINAL_TRIGGERS:  # the feed ended it after the message the patient tapped on
            return WriteOutcome("already" if tap == "cancel" else "not_allowed", None, detail=f"hl7 {fed.trigger}")
        if self._via_fhir and (found := await self._fhir_appointment(appointment_ref, fed)) is not None:
            if tap == "confirm":
                return await super().confirm(found, patient_ref, None)
            if tap == "cancel":
                return await super().cancel(found, patient_ref, None)
            return await super().free_slots(found, patient_ref, None)
        if self._srm is not None and tap != "reschedule":
            trigger: SrmTrigger = "S03" if tap == "confirm" else "S04"
            message = srm_message(trigger, facility=fed.facility, application=fed.application,
                                  filler_id=fed.filler_id, placer_id=fed.placer_id, version=version_at_send,
                                  now=utcnow())
            await self._send_srm(trigger, message)
            log.info("SRM^%s for an HL7 appointment of %r acknowledged", trigger, fed.facility)
            return WriteOutcome("confirmed" if tap == "confirm" else "cancelled", None, detail=f"SRM^{trigger} AA")
        await asyncio.to_thread(self._staff_item, tap, fed, patient_ref)
        return WriteOutcome("handoff", None, detail=f"patient-requested-{tap}; hl7 staff alert")

    async def _send_srm(self, trigger: SrmTrigger, message: str) -> None:
        """Sends until ``AA``: a refusal is tried again at once, twice, with the same MSH-10 (an engine's
        ``AE`` is mostly a passing fault); then it raises and the action is retried later."""
        assert self._srm is not None
        for attempt in range(SRM_TRIES):
            ack = await send_message(message, *self._srm, timeout_seconds=SRM_ACK_SECONDS)
            if ack.accepted:
                return
            if attempt + 1 < SRM_TRIES:
                await asyncio.sleep(0.5 * 2 ** attempt)
        raise SrmRefusedError(f"SRM^{trigger} answered {ack.code} ({ack.error_code or 'no ERR'})")

    def _fed(self, appointment_ref: str) -> Hl7Appointment | None:
        resource_id = appointment_ref.split("/", 1)[1]
        with Session(self._engine) as session:
            return session.execute(select(Hl7Appointment)
                                   .where(col(Hl7Appointment.resource_id) == resource_id)).scalars().first()

    async def _fhir_appointment(self, appointment_ref: str, fed: Hl7Appointment | None = None) -> str | None:
        """``Appointment/<id>`` of the FHIR Appointment carrying the filler identifier, if exactly one does."""
        fed = fed or await asyncio.to_thread(self._fed, appointment_ref)
        if fed is None:
            return None
        system = identifier_system(fed.facility, "filler-appointment", self._config.for_facility(fed.facility))
        found = await self._fhir.search("Appointment", [("identifier", f"{system}|{fed.filler_id}")])
        appointments = [r for r in found if r.get("resourceType") == "Appointment" and r.get("id")]
        return f"Appointment/{appointments[0]['id']}" if len(appointments) == 1 else None

    def _staff_item(self, tap: Tap, fed: Hl7Appointment, patient_ref: str) -> None:
        with transaction(self._engine) as session:
            raise_alert(session, f"hl7_writeback:{tap}:{fed.resource_id}", "hl7_writeback",
                        f"{patient_ref} asked to {tap} appointment {fed.filler_id} of {fed.facility} (HL7 feed); "
                        "no write-back path is configured: do it in the scheduling system")

    def _handoff_item(self, patient_ref: str, focus_ref: str, reason: str, urgent: bool,
                      request_key: str | None) -> str:
        fed = self._fed(focus_ref)
        about = f"appointment {fed.filler_id} of {fed.facility}" if fed else focus_ref
        key = f"hl7_handoff:{request_key or patient_ref + ':' + focus_ref}"[:200]
        with transaction(self._engine) as session:
            raise_alert(session, key, "hl7_handoff",
                        f"{'URGENT: ' if urgent else ''}{patient_ref} asked to talk to staff about {about} (HL7 feed; "
                        f"{reason[:60]}); contact them, then acknowledge this alert to end the hand-off")
            alerts = table_of(OperatorAlert)
            alert_id = session.execute(select(alerts.c.id).where(alerts.c.dedupe_key == key)).scalar_one()
        return f"{ALERT_PREFIX}{alert_id}"

    def _alert_open(self, alert_id: int) -> bool:
        with Session(self._engine) as session:
            alert = session.get(OperatorAlert, alert_id)
            return alert is not None and alert.acknowledged_at is None
