""""My appointments" from the menu: the patient's upcoming appointments, PHI-free, each with Confirm,
Reschedule and Cancel buttons.

The menu row queues an ``appointments`` action request (the EHR is read by the action runner, not in
the inbound transaction); the runner searches the patient's Appointments (``patient=``, filtered and
sorted here so that any FHIR server's search works), and answers with one reply-buttons message per
appointment (at most :data:`MAX_SHOWN`, soonest first). Each says only what the confirmation template
says: the local date, the local time and the hospital's public site label (settings ``site_labels``,
never the EHR's Location name). The buttons are action tokens minted as the confirmation's are
(:func:`adapter.outbox.action_tokens.mint_action_token`, with the version read), so a tap goes through
the same write-back (``If-Match``, stale versions answered with what changed). The search is audited
(BALP PatientQuery, parameter names only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from adapter.audit.fhir_access import PATIENT_AGENT, query_entry
from adapter.audit.trail import AuditEntry
from adapter.conversation.chat import ChatReplies
from adapter.conversation.tables import ActionRequest
from adapter.outbox.action_tokens import mint_action_token
from ehr.client import FhirClient
from mappings.fhir_time import parse_instant
from mappings.kinds import local_date_text, local_time_text
from whatsapp.interactive import reply_buttons

MAX_SHOWN = 3
UPCOMING = frozenset({"proposed", "pending", "booked"})


async def upcoming(fhir: FhirClient, patient_ref: str, now: datetime) -> tuple[list[dict[str, Any]], AuditEntry]:
    """The patient's appointments still to come (not declined by them), soonest first, and the search's audit."""
    params = [("patient", patient_ref), ("_count", "50")]
    found = await fhir.search("Appointment", params, max_pages=3)
    mine = [a for a in found if a.get("resourceType") == "Appointment" and a.get("status") in UPCOMING
            and a.get("start") and parse_instant(a["start"]) > now and _takes_part(a, patient_ref)]
    mine.sort(key=lambda a: parse_instant(a["start"]))
    return mine[:MAX_SHOWN], query_entry("Appointment", params, patient_ref=patient_ref, step="menu-appointments",
                                         agent=PATIENT_AGENT, results=len(mine))


def send(replies: ChatReplies, session: Session, row: ActionRequest, appointments: list[dict[str, Any]],
         zone: ZoneInfo) -> None:
    """Queues one message per appointment (or "none to show", with the menu)."""
    found = replies.recipient_of(session, row.phone_index)
    if found is None:
        return
    number, language, default = found[1], row.language, replies.default_language

    def text(key: str, **values: str) -> str:
        return replies.texts.render(key, language, default, **values)[0]

    if not appointments:
        replies.menu(session, natural_key=f"action:{row.id}:none", patient_ref=row.patient_ref, recipient=number,
                     language=language, body="appointments_none")
        return
    desk = replies.front_desk
    for n, appointment in enumerate(appointments):
        reference, version = f"Appointment/{appointment['id']}", (appointment.get("meta") or {}).get("versionId")
        moment = parse_instant(appointment["start"]).astimezone(zone)
        site = next((desk.site_labels[r] for r in _locations(appointment) if r in desk.site_labels), None)
        buttons = [(mint_action_token(session, action=action, patient_ref=row.patient_ref, resource_ref=reference,
                                      version_id=version), text(title))
                   for action, title in (("confirm", "button_confirm"), ("reschedule", "button_reschedule"),
                                         ("cancel", "button_cancel"))]
        body = text("appointment_line", date=local_date_text(moment, language), time=local_time_text(moment, language),
                    site=site or desk.default_site_label or text("site_default"))
        replies.send(session, natural_key=f"action:{row.id}:appointment:{n}", patient_ref=row.patient_ref,
                     recipient=number, message=reply_buttons(body, buttons), language=language)


def _takes_part(appointment: dict[str, Any], patient_ref: str) -> bool:
    return any((p.get("actor") or {}).get("reference") == patient_ref and p.get("status") != "declined"
               for p in appointment.get("participant") or [])


def _locations(appointment: dict[str, Any]) -> list[str]:
    return [ref for p in appointment.get("participant") or []
            if str(ref := (p.get("actor") or {}).get("reference") or "").startswith("Location/")]
