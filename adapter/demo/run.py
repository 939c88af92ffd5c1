"""``bridge demo``: the whole product on one machine, with nothing real behind it.

Starts the sandbox EHR (sekmet-fhir), the WhatsApp emulator and the service; creates clearly
synthetic patients with a booked appointment and a final report (full of details that must NOT
reach the chat); then shows what each patient received and checks that nothing leaked.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from adapter.app import Service, create_app
from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.settings import DEMO_SECRET, Settings, load_settings
from adapter.storage.db import transaction, upgrade
from mappings.conversation import Conversation
from mappings.phi_guard import identifying_strings
from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.server import EmulatorServer

Say = Callable[[str], None]
DEMO_SITE = "Location/demo-site-north"  # created with this id, so the demo settings can label it


@dataclass
class DemoStack:
    ehr: SandboxEhr
    emulator: EmulatorServer
    server: uvicorn.Server
    thread: threading.Thread
    settings: Settings
    service: Service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.emulator.stop()
        self.ehr.stop()


def start_stack(workdir: Path, **overrides: Any) -> DemoStack:
    """EHR + emulator + service on free loopback ports, wired to each other."""
    ehr = SandboxEhr(workdir / "ehr").start()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    settings = load_settings(**{
        "mode": "demo", "fhir_base_url": ehr.base_url, "public_base_url": public, "http_port": port,
        "database_url": f"sqlite:///{workdir / 'bridge.db'}", "portal_base_url": f"{public}/portal-demo",
        "tick_seconds": 0.2, "site_labels": {DEMO_SITE: "North Campus"}, "audit_checkpoint_seconds": 1.0,
        **overrides,
    })
    emulator = EmulatorServer(EmulatorConfig(
        access_token=DEMO_SECRET, app_secret=DEMO_SECRET, public_base_url=public,
        phone_numbers={settings.whatsapp_phone_number_id: "+1 555 0100"}, waba_id=settings.whatsapp_waba_id,
        webhook_url=f"{public}/whatsapp/webhook"))
    emulator.start()
    settings = settings.model_copy(update={"whatsapp_api_base_url": emulator.base_url})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="bridge-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return DemoStack(ehr, emulator, server, thread, settings, app.state.service)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def synthetic_world(start: datetime) -> dict[str, dict[str, Any]]:
    """Obviously synthetic resources, deliberately full of things that must stay out of chat."""
    when = start.replace(hour=10, minute=30, second=0, microsecond=0)
    return {
        "location": {"resourceType": "Location", "name": "Oncology Wing B (synthetic)"},
        "practitioner": {"resourceType": "Practitioner", "name": [{"family": "Oncologist-Synthetic",
                                                                    "given": ["Doctor"]}]},
        "patient_en": {
            "resourceType": "Patient", "name": [{"family": "Testpatient", "given": ["Synthetic", "Demo"]}],
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-SYN-000417"}],
            "birthDate": "1970-01-01",
            "telecom": [{"system": "phone", "value": "+1 201-555-0123", "use": "mobile"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]},
                               "preferred": True}],
        },
        "patient_es": {
            "resourceType": "Patient", "name": [{"family": "Pacienteprueba", "given": ["Sintetica"]}],
            "birthDate": "1980-02-02",
            "telecom": [{"system": "phone", "value": "+1 201-555-0145", "use": "mobile"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]},
                               "preferred": True}],
        },
        "patient_no_consent": {
            "resourceType": "Patient", "name": [{"family": "Noconsent", "given": ["Synthetic"]}],
            "telecom": [{"system": "phone", "value": "+1 201-555-0167", "use": "mobile"}],
        },
        "appointment": {
            "resourceType": "Appointment", "status": "booked",
            "serviceType": [{"text": "Chemotherapy infusion"}], "description": "Cycle 3 of synthetic regimen",
            "start": when.isoformat(), "end": (when + timedelta(minutes=45)).isoformat(),
        },
        "report": {
            "resourceType": "DiagnosticReport", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "25836-8",
                                 "display": "HIV-1 RNA viral load (synthetic)"}]},
            "conclusion": "Synthetic conclusion: detectable viral load",
        },
    }


def _create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


def seed(stack: DemoStack) -> dict[str, dict[str, Any]]:
    world = synthetic_world(datetime.now(stack.settings.zone) + timedelta(days=2))
    made: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=stack.ehr.base_url, timeout=10,
                      headers={"Content-Type": "application/fhir+json"}) as client:
        location = dict(world["location"], id=DEMO_SITE.split("/")[1])
        client.put(f"/{DEMO_SITE}", json=location).raise_for_status()
        made["location"] = location
        for key in ("practitioner", "patient_en", "patient_es", "patient_no_consent"):
            made[key] = _create(client, world[key])
        with transaction(_engine(stack)) as session:
            for key in ("patient_en", "patient_es"):
                set_consent(session, f"Patient/{made[key]['id']}", OPTED_IN, "admin")
        for patient_key in ("patient_en", "patient_es", "patient_no_consent"):
            appointment = dict(world["appointment"], participant=[
                {"actor": {"reference": f"Patient/{made[patient_key]['id']}", "display": "Synthetic Testpatient"},
                 "status": "needs-action"},  # awaiting the patient's confirmation
                {"actor": {"reference": f"Practitioner/{made['practitioner']['id']}",
                           "display": "Doctor Oncologist-Synthetic"}, "status": "accepted"},
                {"actor": {"reference": f"Location/{made['location']['id']}",
                           "display": "Oncology Wing B (synthetic)"}, "status": "accepted"}])
            made[f"appointment_{patient_key}"] = _create(client, appointment)
        report = dict(world["report"], subject={"reference": f"Patient/{made['patient_en']['id']}"})
        made["report"] = _create(client, report)
        made["report_preliminary"] = _create(client, dict(report, status="preliminary"))
    return made


def _engine(stack: DemoStack) -> Any:
    from adapter.storage.db import make_engine

    engine = make_engine(stack.settings.database_url)
    upgrade(engine)
    return engine


def render_for_patient(message: dict[str, Any], catalogue_text: Callable[[str, str], str]) -> str:
    """What the patient's phone shows: the approved body text with the parameters filled in."""
    template = message["template"]
    params = [p.get("text", "") for c in template.get("components", []) if c.get("type") == "body"
              for p in c.get("parameters", [])]
    text = catalogue_text(template["name"], template["language"]["code"])
    return re.sub(r"\{\{(\d+)\}\}", lambda m: params[int(m.group(1)) - 1], text)


def leaks(payload: dict[str, Any], identifying: frozenset[str]) -> list[str]:
    body = {k: v for k, v in payload.items() if k != "to"}
    text = json.dumps(body, ensure_ascii=False).lower()
    return [s for s in identifying if len(s) >= 4 and s.lower() in text]


def run_demo(say: Say, *, keep_running: bool, workdir: Path | None = None) -> int:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    say(f"Starting the sandbox EHR, the WhatsApp emulator and the service (files in {workdir}) ...")
    stack = start_stack(workdir)
    try:
        say(f"  EHR (sekmet-fhir): {stack.ehr.base_url}\n  WhatsApp emulator: {stack.emulator.base_url}\n"
            f"  service:           {stack.settings.public_base_url}  (health: /health)")
        wait_for(lambda: _subscriptions_ready(stack), 30, "the EHR subscriptions")
        say("EHR subscriptions are active. Creating synthetic patients, appointments and reports ...")
        made = seed(stack)
        messages = wait_for(lambda: _messages(stack, 3), 30, "three messages at the emulator")
        return _report(say, stack, made, messages, keep_running)
    finally:
        if not keep_running:
            stack.stop()


def _skip_lines(stack: DemoStack) -> list[str]:
    from sqlmodel import Session, select

    from adapter.outbox.tables import NotificationSkip

    with Session(_engine(stack)) as session:
        skips = session.exec(select(NotificationSkip)).all()
    return ["Not sent (recorded for operators, `bridge skips`):"] + [
        f"  {skip.rule_id} for {skip.resource_ref}: {skip.reason}" for skip in skips
    ] + ["  (and nothing at all for the preliminary report: rules fire only on final/amended/corrected/appended)"]


def _link_walkthrough(stack: DemoStack, messages: list[dict[str, Any]]) -> str:
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


def _confirm_walkthrough(stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]]) -> str:
    """The Spanish patient taps Confirm: the EHR's appointment shows them as accepted."""
    appointment = made["appointment_patient_es"]
    patient_ref = f"Patient/{made['patient_es']['id']}"
    phone = made["patient_es"]["telecom"][0]["value"]
    digits = "".join(ch for ch in phone if ch.isdigit())
    message = next((m.get("payload") or m) for m in messages if str((m.get("payload") or m)["to"]).endswith(digits))
    confirm = next(c["parameters"][0]["payload"] for c in message["template"]["components"]
                   if c.get("sub_type") == "quick_reply")
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", timeout=10,
               json={"from": phone, "button": {"payload": confirm, "text": "Confirmar"}}).raise_for_status()

    def accepted() -> bool:
        current = httpx.get(f"{stack.ehr.base_url}/Appointment/{appointment['id']}", timeout=5).json()
        return any(p["actor"]["reference"] == patient_ref and p["status"] == "accepted"
                   for p in current["participant"])

    wait_for(accepted, 20, "the confirmation to reach the EHR")
    version = httpx.get(f"{stack.ehr.base_url}/Appointment/{appointment['id']}", timeout=5).json()["meta"]["versionId"]
    expected = Conversation.load().text("confirmed", "es", "en_US")[0]
    wait_for(lambda: expected in _texts_to(stack, digits), 20, "the reply")
    return (f"Patient tapped Confirmar → the EHR's Appointment shows them accepted (version {version}, written "
            f"with If-Match); after the welcome, the reply:\n  {expected}")


def _texts_to(stack: DemoStack, digits: str) -> list[str]:
    return [(m.get("payload") or m)["text"]["body"] for m in _messages(stack, 0) or []
            if (m.get("payload") or m).get("type") == "text" and str((m.get("payload") or m)["to"]).endswith(digits)]


def _stop_walkthrough(stack: DemoStack, made: dict[str, dict[str, Any]]) -> str:
    """The English patient replies STOP: opted out, told so once, and the next booking sends nothing."""
    from sqlmodel import Session

    from adapter.recipients.tables import ConsentRecord

    patient_ref = f"Patient/{made['patient_en']['id']}"
    phone = made["patient_en"]["telecom"][0]["value"]
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", json={"from": phone, "text": "STOP"},
               timeout=10).raise_for_status()
    body = wait_for(lambda: _texts_to(stack, "".join(ch for ch in phone if ch.isdigit())), 20,
                    "the STOP confirmation")[0]
    with Session(_engine(stack)) as session:
        record = session.get(ConsentRecord, patient_ref)
    return (f"Patient replied STOP → consent {record.status if record else '?'} (source: chat); "
            f"confirmation sent once, as free-form text inside the 24-hour window:\n  {body}")


def _audit_walkthrough(stack: DemoStack) -> str:
    """An auditor's view: log in, ask the API for the disclosures (BALP PrivacyDisclosure), verify the chain."""
    from adapter.audit.verify import verify_trail
    from adapter.security.credentials import create_credential

    engine = _engine(stack)
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


def _subscriptions_ready(stack: DemoStack) -> bool:
    health = httpx.get(f"{stack.settings.public_base_url}/health", timeout=5).json()
    return bool(health["subscriptions"]) and all(s["status"] in ("active", "requested")
                                                 for s in health["subscriptions"])


def _messages(stack: DemoStack, count: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = httpx.get(f"{stack.emulator.base_url}/_emulator/messages", timeout=5).json()
    if isinstance(found, dict):
        found = found.get("messages", [])
    return found if len(found) >= count else None


def _report(say: Say, stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]],
            keep_running: bool) -> int:
    from whatsapp.catalogue import TemplateCatalogue

    catalogue = TemplateCatalogue.load(public_base_url=stack.settings.public_base_url)

    def body_text(name: str, language: str) -> str:
        template = catalogue.get(name, language)
        return template.body_text if template else "?"

    identifying = frozenset().union(*(
        identifying_strings(resource, None) for resource in made.values()))
    leaked_total = 0
    for message in messages:
        payload = message.get("payload") or message.get("request") or message
        leaked = leaks(payload, identifying)
        leaked_total += len(leaked)
        buttons = [c for c in payload["template"].get("components", []) if c.get("type") == "button"]
        say(f"\n--- to {str(payload['to'])[:3]}•••••{str(payload['to'])[-2:]} · template {payload['template']['name']} "
            f"({payload['template']['language']['code']})")
        say("  " + render_for_patient(payload, body_text))
        for button in buttons:
            value = button["parameters"][0].get("payload") or button["parameters"][0].get("text")
            say(f"  [{button['sub_type']} button {button['index']}] opaque token: {value[:6]}… ({len(value)} chars)")
    time.sleep(1.0)  # let the emulator's status webhooks land
    health = httpx.get(f"{stack.settings.public_base_url}/health", timeout=5).json()
    say(f"\nOutbox: {health['outbox']}")
    for line in _skip_lines(stack):
        say(line)
    say(_link_walkthrough(stack, messages))
    say(_confirm_walkthrough(stack, made, messages))
    say(_stop_walkthrough(stack, made))
    say(f"PHI check: {leaked_total} of {len(identifying)} identifying strings of the synthetic patients, "
        "appointments and reports appear in what WhatsApp received.")
    say(_audit_walkthrough(stack))
    if keep_running:
        say("\nEverything keeps running; press Ctrl-C to stop. Try: "
            f"curl {stack.emulator.base_url}/_emulator/messages")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            stack.stop()
    return 0 if leaked_total == 0 and len(messages) == 3 else 1
