"""``bridge demo``: the whole product on one machine, with nothing real behind it.

Starts the sandbox EHR (sekmet-fhir), the WhatsApp emulator and the service; creates clearly
synthetic patients with a booked appointment and a final report (full of details that must NOT
reach the chat); then shows what each patient received and checks that nothing leaked.

``feed="hl7"`` feeds the same world as HL7 v2 over MLLP instead of FHIR Subscriptions
(:mod:`adapter.demo.hl7_feed`): SIU^S12 and ORU^R01 to the service's MLLP listener, each ACK printed,
and the tap written back as an SRM^S03 to a scheduling system the demo runs.
"""

from __future__ import annotations

import json
import re
import signal
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from adapter.demo.hl7_feed import SchedulingSystem, ack_line, opt_in, save_messages, send_all, srm_confirm_walkthrough
from adapter.demo.hl7_world import hl7_world
from adapter.demo.sandbox_ehr import free_port
from adapter.demo.signals import StopRequested, terminate_as_interrupt
from adapter.demo.stack import DemoStack, emulator_messages, start_stack, subscriptions_ready, wait_for
from adapter.demo.walkthroughs import (
    audit_walkthrough,
    confirm_walkthrough,
    link_walkthrough,
    skip_lines,
    stop_walkthrough,
)
from adapter.demo.world import seed
from adapter.storage.db import utcnow
from mappings.phi_guard import identifying_strings
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.emulator.phone import PREFIX as PHONE_PAGE

Say = Callable[[str], None]
Feed = Literal["fhir", "hl7"]


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


def run_demo(say: Say, *, keep_running: bool, workdir: Path | None = None, feed: Feed = "fhir") -> int:
    """Runs the demo; Ctrl-C or SIGTERM at any point stops everything it started (no process is left
    behind). Returns the report's verdict (0: three messages, no PHI; with ``feed="hl7"`` also every
    message acknowledged ``AA``), or 128 + the signal's number when stopped before the report."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    say(f"Starting the sandbox EHR, the WhatsApp emulator and the service (files in {workdir}) ...")
    verdict: int | None = None
    with terminate_as_interrupt():
        stack: DemoStack | None = None
        scheduling: SchedulingSystem | None = None
        try:
            if feed == "hl7":
                scheduling = SchedulingSystem().start()
                stack = start_stack(workdir, hl7_enabled=True, hl7_listen_port=free_port(),
                                    hl7_srm_host="127.0.0.1", hl7_srm_port=scheduling.port)
            else:
                stack = start_stack(workdir)
            say(f"  EHR (sekmet-fhir): {stack.ehr.base_url}\n  WhatsApp emulator: {stack.emulator.base_url}\n"
                f"  patients' phones:  {stack.emulator.base_url}{PHONE_PAGE}  (test tool: open in a browser)\n"
                f"  service:           {stack.settings.public_base_url}  (health: /health)")
            if scheduling is not None:
                verdict = _run_hl7(say, stack, scheduling, workdir)
            else:
                wait_for(lambda: subscriptions_ready(stack), 30, "the EHR subscriptions")
                say("EHR subscriptions are active. Creating synthetic patients, appointments and reports ...")
                made = seed(stack)
                messages = wait_for(lambda: emulator_messages(stack, 3), 30, "three messages at the emulator")
                verdict = _report(say, stack, made, messages)
            if keep_running:
                say("\nEverything keeps running; press Ctrl-C to stop. Open the patients' phones at "
                    f"{stack.emulator.base_url}{PHONE_PAGE} to tap a button or reply, or try: "
                    f"curl {stack.emulator.base_url}/_emulator/messages"
                    + (f", or send HL7 v2: bridge hl7 send FILE --host 127.0.0.1 --port "
                       f"{stack.settings.hl7_listen_port}" if scheduling is not None else ""))
                while True:
                    time.sleep(3600)
            return verdict
        except KeyboardInterrupt as stop:
            say("Stopping the service, the emulator and the sandbox EHR ...")
            signum = stop.signum if isinstance(stop, StopRequested) else signal.SIGINT
            return verdict if verdict is not None else 128 + signum
        finally:
            if stack is not None:
                stack.stop()
            if scheduling is not None:
                scheduling.stop()


def _run_hl7(say: Say, stack: DemoStack, scheduling: SchedulingSystem, workdir: Path) -> int:
    """The HL7 feed's part: the world sent over MLLP, each ACK shown, then the same report."""
    port = stack.settings.hl7_listen_port
    say(f"  HL7 v2 listener:   127.0.0.1:{port}  (MLLP; the feed instead of FHIR Subscriptions)\n"
        f"  scheduling system: 127.0.0.1:{scheduling.port}  (MLLP; receives SRM requests for taps)")
    made, hl7 = hl7_world(datetime.now(stack.settings.zone) + timedelta(days=2), utcnow())
    opt_in(stack, made)
    path = save_messages(workdir, list(hl7.values()))
    say("Staff opted two synthetic patients in (by MRN). Sending SIU^S12 (one per patient) and ORU^R01 (a final "
        "and a preliminary report) over MLLP ...")
    acks = send_all(stack, list(hl7.values()))
    for message, ack in zip(hl7.values(), acks, strict=True):
        say(ack_line(message, ack))
    say(f"Send them again yourself: bridge hl7 send {path} --host 127.0.0.1 --port {port}\n"
        "  (each is acknowledged AA and recognised as a duplicate by MSH-10: nothing is sent twice)")
    messages = wait_for(lambda: emulator_messages(stack, 3), 30, "three messages at the emulator")
    verdict = _report(say, stack, made, messages,
                      confirm=lambda: srm_confirm_walkthrough(stack, made, messages, scheduling))
    return verdict if all(ack.code == "AA" for ack in acks) else 1


def _report(say: Say, stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]], *,
            confirm: Callable[[], str] | None = None) -> int:
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
    for line in skip_lines(stack):
        say(line)
    say(link_walkthrough(stack, messages))
    say(confirm() if confirm is not None else confirm_walkthrough(stack, made, messages))
    say(stop_walkthrough(stack, made))
    say(f"PHI check: {leaked_total} of {len(identifying)} identifying strings of the synthetic patients, "
        "appointments and reports appear in what WhatsApp received.")
    say(audit_walkthrough(stack))
    return 0 if leaked_total == 0 and len(messages) == 3 else 1
