"""Inbound simulators and the 24-hour window on the virtual clock, checked on a real receiver."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from wa_helpers import (
    PATIENT,
    PATIENT_DIGITS,
    WABA_ID,
    Receiver,
    request,
    send_raw,
    template_payload,
    text_payload,
)

from whatsapp.emulator import EmulatorServer, StatusDelays
from whatsapp.emulator.payloads import bsuid_for
from whatsapp.webhook import parse_webhook

USER_ID = bsuid_for(PATIENT_DIGITS, WABA_ID)


async def inbound(emulator: EmulatorServer, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await request("POST", f"{emulator.base_url}/_emulator/inbound", body)
    assert status == 200, answer
    return answer


def last_value(receiver: Receiver) -> dict[str, Any]:
    value: dict[str, Any] = receiver.documents()[-1]["entry"][0]["changes"][0]["value"]
    return value


def value_of(receiver: Receiver, message_id: str) -> dict[str, Any]:
    """The ``value`` of the webhook that carried inbound message ``message_id``. Not simply the last webhook: the
    status webhook of an earlier send is delivered in the background and may arrive after it."""
    [value] = [change["value"] for document in receiver.documents() for entry in document["entry"]
               for change in entry["changes"]
               if any(message["id"] == message_id for message in change["value"].get("messages", []))]
    return value


@pytest.fixture
def wired(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    return start_emulator(webhook_url=receiver.url, status_delays=StatusDelays(sent=0.01, delivered=None))


async def test_text_carries_phone_and_bsuid(wired: EmulatorServer, receiver: Receiver) -> None:
    answer = await inbound(wired, {"from": PATIENT, "text": "Hello", "profile_name": "Synthetic Testpatient"})
    assert answer["delivered"] and answer["message_id"].startswith("wamid.")
    assert (answer["wa_id"], answer["user_id"], answer["type"]) == (PATIENT_DIGITS, USER_ID, "text")
    value = last_value(receiver)
    assert value["contacts"] == [{"profile": {"name": "Synthetic Testpatient"}, "wa_id": PATIENT_DIGITS,
                                  "user_id": USER_ID}]
    [message] = value["messages"]
    assert message == {"from": PATIENT_DIGITS, "from_user_id": USER_ID, "id": answer["message_id"],
                       "timestamp": str(answer["timestamp"]), "type": "text", "text": {"body": "Hello"}}


async def test_template_quick_reply_tap_with_and_without_context(wired: EmulatorServer, receiver: Receiver) -> None:
    _, sent = await send_raw(wired.base_url, template_payload())
    wamid = sent["messages"][0]["id"]
    answer = await inbound(wired, {"from": PATIENT, "button": {"payload": "confirm:ob-1", "text": "Confirm"},
                                   "context": wamid})
    [tapped] = value_of(receiver, answer["message_id"])["messages"]
    assert tapped["type"] == "button" and tapped["button"] == {"payload": "confirm:ob-1", "text": "Confirm"}
    assert tapped["context"] == {"from": "12015550100", "id": wamid}
    answer = await inbound(wired, {"from": PATIENT, "button": {"payload": "cancel:ob-1", "text": "Cancel"}})
    [untapped] = value_of(receiver, answer["message_id"])["messages"]
    assert "context" not in untapped
    parsed = [m for _, body in receiver.received for m in parse_webhook(body).messages]
    assert [(m.button_payload, m.context_message_id) for m in parsed] == [
        ("confirm:ob-1", wamid), ("cancel:ob-1", None)]


async def test_interactive_replies(wired: EmulatorServer, receiver: Receiver) -> None:
    await inbound(wired, {"from": PATIENT, "button_reply": {"id": "handoff", "title": "Talk to staff"},
                          "context": "wamid.synthetic"})
    await inbound(wired, {"from": PATIENT, "interactive_reply": {"id": "old-shape", "title": "Still works"}})
    await inbound(wired, {"from": PATIENT, "list_reply": {"id": "billing", "title": "Billing",
                                                          "description": "Invoices and payments"}})
    items = receiver.messages()
    assert items[0]["interactive"] == {"type": "button_reply",
                                       "button_reply": {"id": "handoff", "title": "Talk to staff"}}
    assert items[1]["interactive"]["button_reply"]["id"] == "old-shape"
    assert items[2]["interactive"] == {"type": "list_reply", "list_reply": {
        "id": "billing", "title": "Billing", "description": "Invoices and payments"}}
    parsed = [m for _, body in receiver.received for m in parse_webhook(body).messages]
    assert [m.interactive_reply_id for m in parsed] == ["handoff", "old-shape", "billing"]


async def test_user_changed_number_is_a_system_message(wired: EmulatorServer, receiver: Receiver) -> None:
    answer = await inbound(wired, {"from": PATIENT, "profile_name": "Synthetic Testpatient",
                                   "system": {"type": "user_changed_number", "new_wa_id": "+1 201-555-0199"}})
    value = last_value(receiver)
    assert "contacts" not in value  # Meta: system messages have no contacts array
    [message] = value["messages"]
    assert message["type"] == "system" and message["from"] == PATIENT_DIGITS
    assert message["system"] == {
        "body": "User Synthetic Testpatient changed from 12015550123 to 12015550199",
        "wa_id": "12015550199", "new_wa_id": "12015550199", "type": "user_changed_number",
        "previous_user_id": USER_ID, "user_id": bsuid_for("12015550199", WABA_ID)}
    assert answer["type"] == "system"
    [parsed] = parse_webhook(receiver.received[-1][1]).messages  # the service's parser understands it
    assert (parsed.type, parsed.from_id, parsed.system_type, parsed.new_wa_id) == (
        "system", PATIENT_DIGITS, "user_changed_number", "12015550199")
    # A number change is not the user writing: the window stays closed.
    await send_raw(wired.base_url, text_payload())
    await receiver.until(lambda r: len(r.statuses()) == 1)
    assert receiver.statuses()[0]["status"] == "failed"


async def test_bsuid_only_sender(wired: EmulatorServer, receiver: Receiver) -> None:
    await inbound(wired, {"bsuid_only": True, "from_user_id": "US.1000000000000000001", "text": "Hi"})
    value = last_value(receiver)
    [message] = value["messages"]
    assert "from" not in message and message["from_user_id"] == "US.1000000000000000001"
    assert value["contacts"] == [{"profile": {"name": "Test User"}, "user_id": "US.1000000000000000001"}]
    [parsed] = parse_webhook(receiver.received[-1][1]).messages
    assert (parsed.from_id or None, parsed.from_user_id) == (None, "US.1000000000000000001")
    await inbound(wired, {"bsuid_only": True, "from": PATIENT, "text": "Hi again"})  # Meta knows the number
    value = last_value(receiver)
    assert "wa_id" not in value["contacts"][0] and "from" not in value["messages"][0]
    assert value["contacts"][0]["user_id"] == USER_ID
    await send_raw(wired.base_url, text_payload())  # the window is open for that number
    await receiver.until(lambda r: len(r.statuses()) == 1)
    assert receiver.statuses()[0]["status"] == "sent"


@pytest.mark.parametrize("body", [
    {"text": "no sender"},
    {"from": "no digits", "text": "x"},
    {"bsuid_only": True, "text": "neither from nor from_user_id"},
    {"from": PATIENT, "system": {"type": "user_changed_user_id", "new_wa_id": "1"}},
    {"from": PATIENT, "text": "x", "age_seconds": -1},
    {"from": PATIENT, "text": "x", "phone_number_id": "999"},
    {"from": PATIENT, "button": {"text": "no payload"}},
])
async def test_bad_inbound_bodies_are_refused(emulator: EmulatorServer, body: dict[str, Any]) -> None:
    status, answer = await request("POST", f"{emulator.base_url}/_emulator/inbound", body)
    assert status == 422 and "error" in answer


async def test_window_runs_from_the_virtual_time_of_the_last_message(wired: EmulatorServer,
                                                                     receiver: Receiver) -> None:
    answer = await inbound(wired, {"from": PATIENT, "text": "Written yesterday", "age_seconds": 23 * 3600})
    assert abs(answer["timestamp"] - (time.time() - 23 * 3600)) < 5
    assert receiver.messages()[0]["timestamp"] == str(answer["timestamp"])
    _, first = await send_raw(wired.base_url, text_payload("Within the window"))
    await request("POST", f"{wired.base_url}/_emulator/clock", {"advance_seconds": 3600})
    _, second = await send_raw(wired.base_url, text_payload("An hour later: 24 h have passed"))
    await receiver.until(lambda r: len(r.statuses()) == 2)
    outcome = {s["id"]: s["status"] for s in receiver.statuses()}
    assert outcome == {first["messages"][0]["id"]: "sent", second["messages"][0]["id"]: "failed"}
    await inbound(wired, {"from": PATIENT, "text": "Older message arriving late", "age_seconds": 30 * 3600})
    _, third = await send_raw(wired.base_url, text_payload("Still closed"))
    await inbound(wired, {"from": PATIENT, "text": "Now"})
    _, fourth = await send_raw(wired.base_url, text_payload("Open again"))
    await receiver.until(lambda r: len(r.statuses()) == 4)
    outcome = {s["id"]: s["status"] for s in receiver.statuses()}
    assert (outcome[third["messages"][0]["id"]], outcome[fourth["messages"][0]["id"]]) == ("failed", "sent")
