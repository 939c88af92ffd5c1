"""Status and inbound webhooks from the emulator to a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from wa_helpers import (
    APP_SECRET,
    PATIENT,
    PATIENT_DIGITS,
    PHONE_NUMBER_ID,
    TOKEN,
    VERSION,
    Receiver,
    call,
    template_payload,
)

from whatsapp.emulator import EmulatorServer, StatusDelays
from whatsapp.errors import UndeliverableError, WindowClosedError, from_error_fields
from whatsapp.sender import CloudApiSender
from whatsapp.signature import HEADER, verify
from whatsapp.webhook import StatusEvent, parse_webhook

SECRETS = [APP_SECRET.encode()]


def sender_for(emulator: EmulatorServer) -> CloudApiSender:
    return CloudApiSender(emulator.base_url, VERSION, PHONE_NUMBER_ID, TOKEN, 5.0, 4)


def statuses(receiver: Receiver) -> list[StatusEvent]:
    found = []
    for headers, body in receiver.received:
        assert verify(body, headers.get(HEADER), SECRETS), "signature must verify over the raw bytes"
        found.extend(parse_webhook(body).statuses)
    return found


async def test_sent_delivered_read_in_order_signed_with_callback(
    receiver: Receiver, start_emulator: Callable[..., EmulatorServer]
) -> None:
    emulator = start_emulator(webhook_url=receiver.url)
    callback = "outbox:42/café"  # "/" and "é" make Meta's escaping visible
    async with sender_for(emulator) as sender:
        result = await sender.send(template_payload(biz_opaque_callback_data=callback))
    await receiver.wait_for(3)
    events = statuses(receiver)
    assert [e.status for e in events] == ["sent", "delivered", "read"]
    assert {e.message_id for e in events} == {result.message_id}
    assert all(e.biz_opaque_callback_data == callback for e in events)
    assert all(e.recipient_id == PATIENT_DIGITS and e.phone_number_id == PHONE_NUMBER_ID for e in events)
    sent, delivered, read = events
    assert sent.pricing == {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"}
    assert sent.conversation is not None and "expiration_timestamp" in sent.conversation
    assert delivered.pricing is not None and delivered.conversation is not None
    assert read.pricing is None and read.conversation is None
    assert sent.timestamp <= delivered.timestamp <= read.timestamp
    raw = receiver.received[0][1]
    assert b"outbox:42\\/caf\\u00e9" in raw  # escaped like Meta, and signed over exactly these bytes
    assert raw.isascii()
    document = json.loads(raw)
    assert document["object"] == "whatsapp_business_account"
    assert document["entry"][0]["id"] == "200000000000002"
    change = document["entry"][0]["changes"][0]
    assert change["field"] == "messages"
    assert change["value"]["metadata"] == {"display_phone_number": "12015550100", "phone_number_id": PHONE_NUMBER_ID}
    assert isinstance(change["value"]["statuses"][0]["timestamp"], str)


async def test_failed_delivery_is_retried(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> None:
    receiver.statuses_to_return = [500, 503]
    emulator = start_emulator(webhook_url=receiver.url, status_delays=StatusDelays(sent=0.01, delivered=None))
    async with sender_for(emulator) as sender:
        result = await sender.send(template_payload())
    await receiver.wait_for(3)
    assert receiver.received[0][1] == receiver.received[2][1]  # the same signed bytes each time
    records: list[dict[str, Any]] = []
    for _ in range(50):  # the emulator records the delivery just after the receiver answered it
        # wamids are base64 like Meta's: '+' and '=' must be escaped in the query string
        query = urlencode({"message_id": result.message_id})
        deliveries = await call("GET", f"{emulator.base_url}/_emulator/webhooks?{query}")
        records = deliveries["deliveries"]
        if records and records[0]["delivered"]:
            break
        await asyncio.sleep(0.05)
    [record] = records
    assert [a["http_status"] for a in record["attempts"]] == [500, 503, 200]
    assert record["delivered"] is True and record["label"] == "sent"


async def test_webhooks_can_be_switched_off(receiver: Receiver,
                                            start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, status_webhooks=False)
    async with sender_for(emulator) as sender:
        await sender.send(template_payload())
    health = await call("GET", f"{emulator.base_url}/_emulator/health")
    assert health["status"] == "ok" and health["accepted"] == 1
    assert receiver.received == []


async def test_service_window_and_inbound_button(receiver: Receiver,
                                                 start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, status_delays=StatusDelays(0.01, 0.01, None))
    text = {"messaging_product": "whatsapp", "to": PATIENT, "type": "text", "text": {"body": "Hello"}}
    async with sender_for(emulator) as sender:
        closed = await sender.send(text)  # accepted, then fails by webhook: the window is closed
        [failed] = [e for e in statuses(await _wait(receiver, 1)) if e.message_id == closed.message_id]
        assert failed.status == "failed"
        assert isinstance(from_error_fields(code=failed.errors[0].code), WindowClosedError)

        template = await sender.send(template_payload())
        tapped = await call("POST", f"{emulator.base_url}/_emulator/inbound", {
            "from": PATIENT, "button": {"payload": "confirm:outbox:42", "text": "Confirm"},
            "context": template.message_id})
        assert tapped["delivered"] is True
        inbound = [m for _, body in receiver.received for m in parse_webhook(body).messages]
        assert [(m.type, m.button_payload, m.context_message_id, m.from_id) for m in inbound] == [
            ("button", "confirm:outbox:42", template.message_id, PATIENT_DIGITS)]

        reply = await sender.send(text)  # inside the window now
    await _until(receiver, lambda events: [e.status for e in events if e.message_id == reply.message_id]
                 == ["sent", "delivered"])
    sent = next(e for e in statuses(receiver) if e.message_id == reply.message_id)
    assert sent.pricing is not None and sent.pricing["billable"] is False


async def test_injected_async_failure(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url)
    await call("POST", f"{emulator.base_url}/_emulator/faults", {"responses": [{"fail_status": {"code": 131026}}]})
    async with sender_for(emulator) as sender:
        result = await sender.send(template_payload())
    [event] = statuses(await _wait(receiver, 1))
    assert (event.message_id, event.status) == (result.message_id, "failed")
    assert isinstance(from_error_fields(code=event.errors[0].code), UndeliverableError)


async def _wait(receiver: Receiver, count: int) -> Receiver:
    await receiver.wait_for(count)
    return receiver


async def _until(receiver: Receiver, done: Callable[[list[StatusEvent]], bool]) -> None:
    import asyncio

    for _ in range(500):
        if done(statuses(receiver)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("webhooks did not arrive")


async def test_out_of_order_statuses(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, out_of_order_statuses=True)
    async with sender_for(emulator) as sender:
        await sender.send(template_payload())
    await receiver.wait_for(3)
    assert [e.status for e in statuses(receiver)] == ["delivered", "sent", "read"]


async def test_webhook_url_can_be_set_after_start(receiver: Receiver,
                                                  start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator()  # no webhook URL yet
    bad = await call("PUT", f"{emulator.base_url}/_emulator/webhook", {"url": "ftp://example"})
    assert "error" in bad
    assert (await call("PUT", f"{emulator.base_url}/_emulator/webhook", {"url": receiver.url}))["url"]
    async with sender_for(emulator) as sender:
        await sender.send(template_payload())
    await receiver.wait_for(3)


async def test_bad_fault_request_is_refused(emulator: EmulatorServer) -> None:
    answer = await call("POST", f"{emulator.base_url}/_emulator/faults", {"oops": []})
    assert "error" in answer
    assert (await call("GET", f"{emulator.base_url}/_emulator/health"))["queued_faults"] == 0
