"""What the demo walks through after the first messages arrive, each returning one line for the
report: the skips recorded for operators, a portal link opened (a preview changes nothing, the tap
redeems), a Confirm tap written back to the EHR, a STOP reply honoured, and an auditor's view of the
trail with its chain verified.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import Session, select

from adapter.audit.verify import verify_trail
from adapter.demo.stack import DemoStack, demo_engine, texts_to, wait_for
from adapter.outbox.tables import NotificationSkip
from adapter.recipients.tables import ConsentRecord
from adapter.security.credentials import create_credential
from mappings.conversation import Conversation


def skip_lines(stack: DemoStack) -> list[str]:
    with Session(demo_engine(stack)) as session:
        skips = session.exec(select(NotificationSkip)).all()
    return ["Not sent (recorded for operators, `bridge skips`):"] + [
        f"  {skip.rule_id} for {skip.resource_ref}: {skip.reason}" for skip in skips
    ] + ["  (and nothing at all for the preliminary report: rules fire only on final/amended/corrected/appended)"]


def link_walkthrough(stack: DemoStack, messages: list[dict[str, Any]]) -> str:
    """A preview bot's GET changes nothing; the patient's POST redeems and goes to the portal."""
    for message in messages:
        template = (message.get("payload") or message)["template"]
        for component in template.get("components", []):
            if component.get("sub_type") == "url":
                link = f"{stack.settings.public_base_url}/l/{component['parameters'][0]['text']}"
                preview = httpx.get(link, timeout=5)
                opened = httpx.post(link, timeout=5)
                return (f"Portal link: GET (a link preview) → {preview.status_code} neutral page; "
                        f"POST (the patient's tap) → {opened.status_code} to {opened.headers.get('location')}")
    return "Portal link: none sent"


def tap_confirmar(stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]]) -> str:
    """The Spanish patient taps the first quick reply (Confirmar) of the template sent to them, through the
    emulator; returns their number's digits."""
    phone = made["patient_es"]["telecom"][0]["value"]
    digits = "".join(ch for ch in phone if ch.isdigit())
    message = next((m.get("payload") or m) for m in messages if str((m.get("payload") or m)["to"]).endswith(digits))
    confirm = next(c["parameters"][0]["payload"] for c in message["template"]["components"]
                   if c.get("sub_type") == "quick_reply")
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", timeout=10,
               json={"from": phone, "button": {"payload": confirm, "text": "Confirmar"}}).raise_for_status()
    return digits


def confirm_walkthrough(stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]]) -> str:
    """The Spanish patient taps Confirm: the EHR's appointment shows them as accepted."""
    appointment = made["appointment_patient_es"]
    patient_ref = f"Patient/{made['patient_es']['id']}"
    digits = tap_confirmar(stack, made, messages)

    def accepted() -> bool:
        current = httpx.get(f"{stack.ehr.base_url}/Appointment/{appointment['id']}", timeout=5).json()
        return any(p["actor"]["reference"] == patient_ref and p["status"] == "accepted"
                   for p in current["participant"])

    wait_for(accepted, 20, "the confirmation to reach the EHR")
    version = httpx.get(f"{stack.ehr.base_url}/Appointment/{appointment['id']}", timeout=5).json()["meta"]["versionId"]
    expected = Conversation.load().text("confirmed", "es", "en_US")[0]
    wait_for(lambda: expected in texts_to(stack, digits), 20, "the reply")
    return (f"Patient tapped Confirmar → the EHR's Appointment shows them accepted (version {version}, written "
            f"with If-Match); after the welcome, the reply:\n  {expected}")


def stop_walkthrough(stack: DemoStack, made: dict[str, dict[str, Any]]) -> str:
    """The English patient replies STOP: opted out, told so once, and the next booking sends nothing."""
    patient_ref = f"Patient/{made['patient_en']['id']}"
    phone = made["patient_en"]["telecom"][0]["value"]
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", json={"from": phone, "text": "STOP"},
               timeout=10).raise_for_status()
    body = wait_for(lambda: texts_to(stack, "".join(ch for ch in phone if ch.isdigit())), 20,
                    "the STOP confirmation")[0]
    with Session(demo_engine(stack)) as session:
        record = session.get(ConsentRecord, patient_ref)
    return (f"Patient replied STOP → consent {record.status if record else '?'} (source: chat); "
            f"confirmation sent once, as free-form text inside the 24-hour window:\n  {body}")


def audit_walkthrough(stack: DemoStack) -> str:
    """An auditor's view: log in, ask the API for the disclosures (BALP PrivacyDisclosure), verify the chain."""
    engine = demo_engine(stack)
    base = stack.settings.public_base_url
    key = create_credential(engine, "demo-auditor", "auditor", actor="demo")
    login = httpx.post(f"{base}/auth/login", headers={"Authorization": f"Bearer {key}"}, timeout=5).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    disclosures = httpx.get(f"{base}/audit/AuditEvent", params={"type": "disclosure", "_count": 1}, headers=auth,
                            timeout=5).json()
    first = disclosures["entry"][0]["resource"] if disclosures.get("entry") else {}
    profile = ((first.get("meta") or {}).get("profile") or ["?"])[0].rsplit("/", 1)[-1]
    forbidden = httpx.get(f"{base}/admin/status", headers=auth, timeout=5).status_code
    public = stack.service.audit_signer.public

    def verified() -> Any:
        report = verify_trail(engine, public)
        return report if report.ok and report.checkpoints_checked else None

    report = wait_for(verified, 15, "a signed audit checkpoint")
    return (f"Audit trail: {disclosures.get('total')} disclosures to WhatsApp as BALP {profile} AuditEvents "
            f"(the auditor's query was itself recorded; the auditor got {forbidden} from /admin); "
            f"`verify`: {report.checked} records chained, {report.checkpoints_checked} signed checkpoint(s), intact.")
