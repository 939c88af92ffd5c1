"""``bridge demo``: the whole product on one machine, with nothing real behind it.

Starts the sandbox EHR (sekmet-fhir), the WhatsApp emulator and the service; creates clearly
synthetic patients with a booked appointment and a final report (full of details that must NOT
reach the chat); then shows what each patient received and checks that nothing leaked.
"""

from __future__ import annotations

import json
import re
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

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
from mappings.phi_guard import identifying_strings
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.emulator.phone import PREFIX as PHONE_PAGE

Say = Callable[[str], None]


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
    """Runs the demo; Ctrl-C or SIGTERM at any point stops everything it started (no process is left
    behind). Returns the report's verdict (0: three messages, no PHI), or 128 + the signal's number when
    stopped before the report."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    say(f"Starting the sandbox EHR, the WhatsApp emulator and the service (files in {workdir}) ...")
    verdict: int | None = None
    with terminate_as_interrupt():
        stack: DemoStack | None = None
        try:
            stack = start_stack(workdir)
            say(f"  EHR (sekmet-fhir): {stack.ehr.base_url}\n  WhatsApp emulator: {stack.emulator.base_url}\n"
                f"  patients' phones:  {stack.emulator.base_url}{PHONE_PAGE}  (test tool: open in a browser)\n"
                f"  service:           {stack.settings.public_base_url}  (health: /health)")
            wait_for(lambda: subscriptions_ready(stack), 30, "the EHR subscriptions")
            say("EHR subscriptions are active. Creating synthetic patients, appointments and reports ...")
            made = seed(stack)
            messages = wait_for(lambda: emulator_messages(stack, 3), 30, "three messages at the emulator")
            verdict = _report(say, stack, made, messages)
            if keep_running:
                say("\nEverything keeps running; press Ctrl-C to stop. Open the patients' phones at "
                    f"{stack.emulator.base_url}{PHONE_PAGE} to tap a button or reply, or try: "
                    f"curl {stack.emulator.base_url}/_emulator/messages")
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


def _report(say: Say, stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]]) -> int:
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
    say(confirm_walkthrough(stack, made, messages))
    say(stop_walkthrough(stack, made))
    say(f"PHI check: {leaked_total} of {len(identifying)} identifying strings of the synthetic patients, "
        "appointments and reports appear in what WhatsApp received.")
    say(audit_walkthrough(stack))
    return 0 if leaked_total == 0 and len(messages) == 3 else 1
