"""The demo's synthetic world as an HL7 v2 scheduling and lab system would send it: one SIU^S12 per
synthetic patient (HL7 v2.5.1 chapter 10.6: MSH, SCH, TQ1, PID, RGS, AIS, AIP, AIL) and an ORU^R01
(chapter 7.3: MSH, PID, OBR, OBX) for a final and a preliminary report.

The messages carry the same details as the FHIR world (:func:`adapter.demo.world.synthetic_world`):
names, birth dates, the MRN, the service, the practitioner, the room, the test and its value, so the
demo's PHI check looks for exactly those strings in what WhatsApp received. Patients are known by MRN
(``hl7_patient_source=message``): the phone is PID-13 (``CP``, mobile), the language PID-15.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from adapter.demo.world import synthetic_world
from ehr.hl7.timestamps import format_dtm

FACILITY = "DEMOHOSP"  # MSH-4 of the synthetic scheduling and lab systems
PATIENTS = ("patient_en", "patient_es", "patient_no_consent")
MRNS = {"patient_en": "MRN-SYN-000417", "patient_es": "MRN-SYN-000418", "patient_no_consent": "MRN-SYN-000419"}
LANGUAGES = {"patient_en": "eng", "patient_es": "spa"}  # ISO 639-2, as v2 senders code PID-15


def _digits(phone: str) -> str:
    return "+" + "".join(ch for ch in phone if ch.isdigit())


def _pid(key: str, patient: dict[str, Any]) -> str:
    name = patient["name"][0]
    phone = patient["telecom"][0]["value"]
    birth = patient.get("birthDate", "").replace("-", "")
    return (f"PID|1||{MRNS[key]}^^^DEMOHOSP&2.16.840.1.113883.19.5&ISO^MR||{name['family']}^{name['given'][0]}||"
            f"{birth}|U|||1 Synthetic Street^^Springfield^ZZ^00000||^PRN^CP^^^^^^^^^{_digits(phone)}||"
            f"{LANGUAGES.get(key, '')}")


def hl7_world(start: datetime, sent: datetime) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(the world's resources, each keyed patient under ``Patient/<MRN>``; the messages by name).

    Message names: ``siu_<patient key>``, ``oru_final``, ``oru_preliminary``; ``start`` is the
    appointment's time (any zone: it travels with its offset), ``sent`` MSH-7."""
    world = synthetic_world(start)
    made: dict[str, dict[str, Any]] = {key: world[key] for key in ("location", "practitioner", "appointment",
                                                                   "report")}
    for key in PATIENTS:
        made[key] = dict(world[key], id=MRNS[key], identifier=[{"system": "urn:oid:2.16.840.1.113883.19.5",
                                                                 "value": MRNS[key]}])
    when = start.replace(hour=10, minute=30, second=0, microsecond=0)
    service = world["appointment"]["serviceType"][0]["text"]
    doctor = world["practitioner"]["name"][0]
    room = world["location"]["name"]
    messages: dict[str, str] = {}
    for number, key in enumerate(PATIENTS, start=1):
        filler = f"APT-DEMO-{number}"
        msh = (f"MSH|^~\\&|DEMOSCHED|{FACILITY}|BRIDGE|BRIDGE|{format_dtm(sent)}||SIU^S12^SIU_S12|"
               f"DEMO-SIU-{number}|P|2.5.1")
        messages[f"siu_{key}"] = "\r".join([
            msh,
            f"SCH|PL-{filler}|{filler}||||ROUTINE|{world['appointment']['description']}||45|MIN|"
            f"^^^{format_dtm(when)}||||||||||||||Booked",
            f"TQ1|1||||||{format_dtm(when)}|{format_dtm(when + timedelta(minutes=45))}",
            _pid(key, made[key]), "RGS|1",
            f"AIS|1||INFUSION^{service}^L|{format_dtm(when)}|||45|MIN",
            f"AIP|1||DR-SYN-1^{doctor['family']}^{doctor['given'][0]}",
            f"AIL|1||WING-B^ROOM-3^^{room}"]) + "\r"
    code = world["report"]["code"]["coding"][0]
    for status, control in (("F", "final"), ("P", "preliminary")):
        messages[f"oru_{control}"] = "\r".join([
            f"MSH|^~\\&|DEMOLAB|{FACILITY}|BRIDGE|BRIDGE|{format_dtm(sent)}||ORU^R01^ORU_R01|DEMO-ORU-{status}|P|2.5.1",
            _pid("patient_en", made["patient_en"]),
            f"OBR|1|PLC-RPT-{control}|RPT-DEMO-{control}^DEMOLAB|{code['code']}^{code['display']}^LN|||"
            f"{format_dtm(sent)}|||||||||||||||{format_dtm(sent)}|||{status}",
            f"OBX|1|ST|{code['code']}^{code['display']}^LN||{world['report']['conclusion']}||||||{status}"]) + "\r"
    return made, messages
