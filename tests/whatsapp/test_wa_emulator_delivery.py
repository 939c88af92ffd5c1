"""Webhooks as Meta delivers them: batched, duplicated, reordered, incomplete, retried on Meta's schedule."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from wa_helpers import (
    APP_SECRET,
    OTHER_PATIENT,
    PATIENT_DIGITS,
    WABA_ID,
    Receiver,
    request,
    send_raw,
    template_payload,
    text_payload,
)

from whatsapp.emulator import EmulatorServer, StatusDelays, WebhookRetryPolicy
from whatsapp.emulator.payloads import bsuid_for
from whatsapp.signature import HEADER, verify
from whatsapp.webhook import parse_webhook

BSUID = re.compile(r"^[A-Z]{2}\.\d{19}$")


async def delivered(emulator: EmulatorServer) -> list[dict[str, Any]]:
    """The deliveries, once the first one is recorded as delivered (just after the receiver answered)."""
    for _ in range(500):
        records = await deliveries(emulator)
        if records and records[0]["delivered"]:
            return records
        await asyncio.sleep(0.01)
    raise AssertionError("no delivery completed")


def all_signed(receiver: Receiver) -> bool:
    return all(verify(body, headers.get(HEADER), [APP_SECRET.encode()]) for headers, body in receiver.received)


async def deliveries(emulator: EmulatorServer, query: str = "") -> list[dict[str, Any]]:
    return (await request("GET", f"{emulator.base_url}/_emulator/webhooks{query}"))[1]["deliveries"]


async def test_status_items_carry_bsuid_pricing_conversation_and_callback(
        receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url)
    _, sent = await send_raw(emulator.base_url, template_payload(biz_opaque_callback_data="outbox:9"))
    await receiver.until(lambda r: len(r.statuses()) == 3)
    items = receiver.statuses()
    user_id = bsuid_for(PATIENT_DIGITS, WABA_ID)
    assert BSUID.match(user_id) and user_id.startswith("US.")
    assert user_id == bsuid_for(PATIENT_DIGITS, WABA_ID) != bsuid_for("12015550124", WABA_ID)  # deterministic
    for item in items:
        assert item["id"] == sent["messages"][0]["id"]
        assert (item["recipient_id"], item["recipient_user_id"]) == (PATIENT_DIGITS, user_id)
        assert item["biz_opaque_callback_data"] == "outbox:9"
    sent_item = items[0]
    assert sent_item["pricing"] == {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"}
    assert int(sent_item["conversation"]["expiration_timestamp"]) == int(sent_item["timestamp"]) + 86_400
    assert "pricing" not in items[2] and "conversation" not in items[2]  # read
    parsed = [event for _, body in receiver.received for event in parse_webhook(body).statuses]
    assert {(e.recipient_id, e.recipient_user_id) for e in parsed} == {(PATIENT_DIGITS, user_id)}
    _, listed = await request("GET", f"{emulator.base_url}/_emulator/messages")
    [record] = listed["messages"]
    assert record["status"] == "read" and record["user_id"] == user_id
    assert [h["status"] for h in record["status_history"]] == ["sent", "delivered", "read"]
    assert all(isinstance(h["timestamp"], int) for h in record["status_history"])


async def test_bsuids_can_be_switched_off(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, bsuid_enabled=False)
    await send_raw(emulator.base_url, template_payload())
    await receiver.until(lambda r: len(r.statuses()) == 3)
    assert all("recipient_user_id" not in item for item in receiver.statuses())


async def test_failed_status_has_metas_errors_array(receiver: Receiver,
                                                    start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url)
    await send_raw(emulator.base_url, text_payload())  # no window
    await receiver.until(lambda r: len(r.statuses()) == 1)
    [item] = receiver.statuses()
    assert item["status"] == "failed" and "pricing" not in item
    assert item["errors"] == [{
        "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
        "error_data": {"details": "Message failed to send because more than 24 hours have passed since the "
                                  "customer last replied to this number."},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]
    _, failed = await request("GET", f"{emulator.base_url}/_emulator/messages?status=failed")
    assert failed["messages"][0]["errors"][0]["code"] == 131047


async def test_statuses_batched_in_one_post(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, batch_statuses=4, batch_window_seconds=0.2,
                              status_delays=StatusDelays(sent=0.01, delivered=None))
    ids = [(await send_raw(emulator.base_url, template_payload(to=f"+1 201-555-01{40 + i}")))[1]["messages"][0]["id"]
           for i in range(6)]
    await receiver.until(lambda r: len(r.statuses()) == 6)
    sizes = [len(doc["entry"][0]["changes"][0]["value"]["statuses"]) for doc in receiver.documents()]
    assert sum(sizes) == 6 and max(sizes) > 1 and max(sizes) <= 4
    assert sorted(item["id"] for item in receiver.statuses()) == sorted(ids)
    assert all_signed(receiver)
    assert len(parse_webhook(receiver.received[0][1]).statuses) == sizes[0]
    records = await deliveries(emulator, "?kind=status")
    assert any(len(r["message_ids"]) > 1 for r in records)


async def test_duplicates_repeat_the_same_signed_bytes(receiver: Receiver,
                                                       start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, duplicate_webhooks=2, duplicate_delay_seconds=0.05,
                              status_delays=StatusDelays(sent=0.01, delivered=0.01, read=None))
    await send_raw(emulator.base_url, template_payload())
    await receiver.until(lambda r: len(r.received) == 6)
    bodies = [body for _, body in receiver.received]
    assert {bodies.count(body) for body in bodies} == {3}
    assert all_signed(receiver)
    records = await deliveries(emulator)
    originals = [r for r in records if r["duplicate_of"] is None]
    assert len(originals) == 2
    assert sorted(r["duplicate_of"] for r in records if r["duplicate_of"]) == sorted([o["id"] for o in originals] * 2)


async def test_read_without_delivered_and_out_of_order(receiver: Receiver,
                                                       start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, skip_delivered=True)
    await send_raw(emulator.base_url, template_payload())
    await receiver.until(lambda r: len(r.statuses()) == 2)
    assert [s["status"] for s in receiver.statuses()] == ["sent", "read"]
    receiver.received.clear()
    await request("PATCH", f"{emulator.base_url}/_emulator/config",
                  {"skip_delivered": False, "out_of_order_statuses": True})
    await send_raw(emulator.base_url, template_payload(to=OTHER_PATIENT))
    await receiver.until(lambda r: len(r.statuses()) == 3)
    assert [s["status"] for s in receiver.statuses()] == ["delivered", "sent", "read"]


async def test_retry_schedule_is_compressed_by_time_scale(receiver: Receiver,
                                                          start_emulator: Callable[..., EmulatorServer]) -> None:
    receiver.statuses_to_return = [500, 503, 500, 500]
    policy = WebhookRetryPolicy(max_attempts=6, initial_backoff_seconds=60.0, multiplier=4.0,
                                max_backoff_seconds=3600.0)
    emulator = start_emulator(webhook_url=receiver.url, webhook_retry=policy, time_scale=0.0001,
                              status_delays=StatusDelays(sent=0.01, delivered=None))
    began = time.monotonic()
    await send_raw(emulator.base_url, template_payload())
    await receiver.until(lambda r: len(r.received) == 5)
    assert time.monotonic() - began < 5  # 60 + 240 + 960 + 3600 emulated seconds
    assert len({body for _, body in receiver.received}) == 1
    [record] = await delivered(emulator)
    assert [a["delay_before"] for a in record["attempts"]] == [0.0, 60.0, 240.0, 960.0, 3600.0]
    assert [a["http_status"] for a in record["attempts"]] == [500, 503, 500, 500, 200]


async def test_a_slow_receiver_is_retried_after_the_timeout(receiver: Receiver,
                                                            start_emulator: Callable[..., EmulatorServer]) -> None:
    receiver.delays_to_apply = [0.5]
    policy = WebhookRetryPolicy(max_attempts=3, initial_backoff_seconds=0.01, timeout_seconds=0.2)
    emulator = start_emulator(webhook_url=receiver.url, webhook_retry=policy,
                              status_delays=StatusDelays(sent=0.01, delivered=None))
    await send_raw(emulator.base_url, template_payload())
    records = await delivered(emulator)
    attempts = records[0]["attempts"]
    assert attempts[0]["error"] == "TimeoutError" and attempts[-1]["http_status"] == 200


async def test_meta_like_retry_preset_spans_about_a_week() -> None:
    policy = WebhookRetryPolicy.meta_like()
    total = sum(policy.delay_before(n) for n in range(2, policy.max_attempts + 1))
    assert 6.5 * 86_400 < total < 7.5 * 86_400
    assert policy.delay_before(2) < policy.delay_before(3) <= policy.max_backoff_seconds


async def test_status_timestamps_follow_the_virtual_clock(receiver: Receiver,
                                                          start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url)
    _, clock = await request("POST", f"{emulator.base_url}/_emulator/clock", {"advance_seconds": 30 * 86_400})
    await send_raw(emulator.base_url, template_payload())
    await receiver.until(lambda r: len(r.statuses()) == 3)
    stamps = [int(s["timestamp"]) for s in receiver.statuses()]
    assert all(stamp >= int(clock["now"]) for stamp in stamps)
    assert stamps[0] > time.time() + 29 * 86_400
    document = json.loads(receiver.received[0][1])
    assert document["entry"][0]["id"] == WABA_ID
