"""The emulator's patient phone in real headless Chromium, at phone width (375 px), against the running demo
stack (sandbox EHR, WhatsApp emulator, service): a synthetic patient's booking confirmation shows with its
filled-in text and real button labels; tapping Confirm changes the EHR's Appointment and the bot's answer
arrives in the chat; a typed reply gets the service's answer (whatever the conversation settings make it).

Writes docs/screenshots/phone-chats.png and docs/screenshots/phone-chat.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from adapter.demo.stack import DemoStack, start_stack, wait_for
from mappings.conversation import Conversation
from tests.browser.conftest import screenshot
from tests.support.e2e import create, health, patient, read, sent_to
from tests.support.synthetic import synthetic_appointment
from whatsapp.catalogue import TemplateCatalogue

pytestmark = pytest.mark.fhir
NUMBER = 61  # the patient's mobile: +1 201-555-0161 (synthetic)
TEXTS = Conversation.load()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    # One message per patient per second (not Meta's 6 s), so the bot's answers follow each other quickly.
    stack = start_stack(tmp_path_factory.mktemp("phone"), dispatch_backoff_seconds=0.2,
                        whatsapp_pair_interval_seconds=1.0)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def filled_body(message: dict[str, Any]) -> str:
    """The approved body text with the send's parameters, as the phone must show it."""
    template = TemplateCatalogue.load().get(message["template"]["name"], message["template"]["language"]["code"])
    assert template is not None
    params = [p["text"] for c in message["template"]["components"] if c["type"] == "body" for p in c["parameters"]]
    return re.sub(r"\{\{(\d+)\}\}", lambda m: params[int(m.group(1)) - 1], template.body_text)


def patient_status(stack: DemoStack, appointment_ref: str, patient_ref: str) -> str:
    current = read(stack, appointment_ref)
    return str(next(p["status"] for p in current["participant"] if p["actor"]["reference"] == patient_ref))


def test_patient_confirms_and_writes_on_the_phone_page(stack: DemoStack, page: Any) -> None:
    from playwright.sync_api import expect

    patient_ref = patient(stack, NUMBER)
    booking = synthetic_appointment(patient_ref)
    booking["participant"][0]["status"] = "needs-action"  # booked, awaiting the patient's confirmation
    appointment_ref = f"Appointment/{create(stack, booking)['id']}"
    [confirmation] = wait_for(lambda: sent_to(stack, NUMBER), 20, "the confirmation")

    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(f"{stack.emulator.base_url}/_emulator/phone")
    expect(page.get_by_text("Test tool:")).to_be_visible()
    chat = page.get_by_role("link", name=re.compile(rf"Patient phone \+•+{NUMBER}"))
    expect(chat).to_be_visible()
    assert f"555-01{NUMBER}" not in page.content() and f"55501{NUMBER}" not in page.content()
    screenshot(page, "phone-chats")

    chat.click()
    log = page.locator("#log")
    expect(log).to_contain_text(filled_body(confirmation))
    expect(log).to_contain_text("No medical advice. Reply STOP to opt out.")
    for label in ("Confirm", "Reschedule", "Cancel", "Talk to staff"):
        expect(log.get_by_role("button", name=label, exact=True)).to_be_visible()
    expect(log.locator(".row.theirs .ticks.read").first).to_be_attached()  # the emulator's read status

    assert patient_status(stack, appointment_ref, patient_ref) == "needs-action"
    log.get_by_role("button", name="Confirm", exact=True).click()
    wait_for(lambda: patient_status(stack, appointment_ref, patient_ref) == "accepted", 20,
             "the EHR's Appointment to show the patient accepted")
    expect(log.locator(".row.mine").last).to_contain_text("Confirm")
    expect(log).to_contain_text(TEXTS.text("confirmed", "en_US", "en_US")[0], timeout=15_000)

    reply = page.get_by_role("textbox", name="Type a message")
    before = len(sent_to(stack, NUMBER))
    reply.fill("hello")
    reply.press("Enter")
    expect(log.locator(".row.mine").last).to_contain_text("hello")
    answer = wait_for(lambda: sent_to(stack, NUMBER)[before:], 20, "the service's answer")[0]
    shown = log.locator(".row.mine:has-text('hello') ~ .row.theirs").first
    expect(shown).to_contain_text(answer_text(answer), timeout=10_000)
    for label in answer_labels(answer):  # the answer's reply buttons, or its list's menu button
        expect(shown).to_contain_text(label)
    screenshot(page, "phone-chat")


def answer_text(message: dict[str, Any]) -> str:
    if message["type"] == "text":
        return str(message["text"]["body"])
    return str(message["interactive"]["body"]["text"])


def answer_labels(message: dict[str, Any]) -> list[str]:
    if message["type"] != "interactive":
        return []
    action = message["interactive"]["action"]
    return [b["reply"]["title"] for b in action.get("buttons", [])] or [action.get("button", "")]
