"""Outbound HL7 v2 scheduling requests for a patient's tap on an HL7-fed appointment.

HL7 v2.5.1 chapter 10.4 (placer application requests): ``SRM^S03`` requests an appointment
modification (here: the patient confirmed), ``SRM^S04`` its cancellation. Structure SRM_S01: MSH,
ARQ (ARQ-1 placer and ARQ-2 filler appointment id, each an EI with the facility as namespace), NTE
(the request in words), RGS. No PID: the filler id names the appointment, and the message carries
nothing about the patient. MSH-10 is derived from the request, so a resend after ``AE`` carries the
same control id and the receiver can deduplicate it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from ehr.hl7.ack import escape
from ehr.hl7.timestamps import format_dtm

SrmTrigger = Literal["S03", "S04"]
REQUEST_TEXT = {"S03": "Patient confirmed the appointment by WhatsApp",
                "S04": "Patient asked by WhatsApp to cancel the appointment"}
_SEP, _ENC = "|", "^~\\&"


def control_id(trigger: SrmTrigger, facility: str, filler_id: str, version: str | None) -> str:
    """20 characters (MSH-10's v2.5.1 length) fixed by the request: trigger, appointment, version tapped."""
    digest = hashlib.sha256("\x1f".join((trigger, facility, filler_id, version or "")).encode()).hexdigest()
    return f"BR{trigger}{digest[:15]}"


def srm_message(trigger: SrmTrigger, *, facility: str, application: str, filler_id: str, placer_id: str | None,
                version: str | None, now: datetime) -> str:
    """The SRM^S03/S04 (CR-terminated) for the appointment ``filler_id`` of ``facility``."""
    def ei(value: str | None) -> str:
        return f"{escape(value, _SEP, _ENC)}^{escape(facility, _SEP, _ENC)}" if value else ""

    msh = _SEP.join(["MSH", _ENC, "BRIDGE", "BRIDGE", escape(application, _SEP, _ENC), escape(facility, _SEP, _ENC),
                     format_dtm(now), "", f"SRM^{trigger}^SRM_S01", control_id(trigger, facility, filler_id, version),
                     "P", "2.5.1"])
    arq = _SEP.join(["ARQ", ei(placer_id), ei(filler_id)])
    return "\r".join([msh, arq, f"NTE|1|P|{REQUEST_TEXT[trigger]}", "RGS|1|U"]) + "\r"
