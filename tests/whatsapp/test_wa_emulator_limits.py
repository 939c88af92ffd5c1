"""Token buckets (130429, 131056), the virtual clock, run-time config and the inspector, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from wa_helpers import (
    OTHER_DIGITS,
    OTHER_PATIENT,
    PATIENT,
    PATIENT_DIGITS,
    PHONE_NUMBER_ID,
    request,
    send_raw,
    template_payload,
)

from whatsapp.emulator import EmulatorServer

SECOND_NUMBER_ID = "100000000000003"
TWO_NUMBERS = {PHONE_NUMBER_ID: "12015550100", SECOND_NUMBER_ID: "12015550101"}


async def codes(emulator: EmulatorServer, count: int, to: str = PATIENT,
                phone_number_id: str = PHONE_NUMBER_ID) -> list[int | None]:
    """Sends ``count`` templates; None for each accepted one, else the error code."""
    found: list[int | None] = []
    for _ in range(count):
        status, body = await send_raw(emulator.base_url, template_payload(to=to), phone_number_id=phone_number_id)
        found.append(None if status == 200 else body["error"]["code"])
    return found


async def advance(emulator: EmulatorServer, seconds: float) -> dict[str, float]:
    status, clock = await request("POST", f"{emulator.base_url}/_emulator/clock", {"advance_seconds": seconds})
    assert status == 200
    return clock


async def test_throughput_bucket_per_phone_number(start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(throughput_limit_per_second=2, rate_limit_tolerance_seconds=0,
                              phone_numbers=TWO_NUMBERS)
    assert await codes(emulator, 3) == [None, None, 130429]  # burst = rate, then empty
    assert await codes(emulator, 1, phone_number_id=SECOND_NUMBER_ID) == [None]  # its own bucket
    await advance(emulator, 1.0)  # a second of virtual time refills 2 tokens
    assert await codes(emulator, 2) == [None] * 2
    status, body = await send_raw(emulator.base_url, template_payload())
    assert (status, body["error"]["code"], body["error"]["type"]) == (400, 130429, "OAuthException")
    assert body["error"]["message"] == "(#130429) Rate limit hit"


async def test_pair_bucket_refills_one_per_six_seconds(start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(pair_rate_limit_per_6s=1, pair_rate_burst=3, phone_numbers=TWO_NUMBERS)
    assert await codes(emulator, 4) == [None, None, None, 131056]  # the burst, then empty
    assert await codes(emulator, 1, to=OTHER_PATIENT) == [None]  # other users are not affected
    assert await codes(emulator, 1, phone_number_id=SECOND_NUMBER_ID) == [None]  # nor other business numbers
    await advance(emulator, 3)
    assert await codes(emulator, 1) == [131056]  # half a token
    await advance(emulator, 3)
    assert await codes(emulator, 2) == [None, 131056]
    _, found = await request("GET", f"{emulator.base_url}/_emulator/rejections?code=131056")
    assert [r["wa_id"] for r in found["rejections"]] == [PATIENT_DIGITS] * 3
    assert found["rejections"][0]["at"] < found["rejections"][-1]["at"] - 5.9  # virtual times


async def test_tolerance_passes_a_slightly_early_send_and_repays_it(
        start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(pair_rate_limit_per_6s=1, pair_rate_burst=1, rate_limit_tolerance_seconds=0.5)
    assert await codes(emulator, 1) == [None]
    await advance(emulator, 5.6)
    assert await codes(emulator, 1) == [None]  # 0.4 s early: within the tolerance, the bucket goes into debt
    await advance(emulator, 5.6)
    assert await codes(emulator, 1) == [131056]  # the debt comes first: this one would be 0.8 s early
    await advance(emulator, 0.4)
    assert await codes(emulator, 1) == [None]
    await request("PATCH", f"{emulator.base_url}/_emulator/config", {"rate_limit_tolerance_seconds": 0})
    await advance(emulator, 5.5)
    assert await codes(emulator, 1) == [131056]  # strict: 6 s means 6 s


async def test_limits_can_be_switched_at_run_time(emulator: EmulatorServer) -> None:
    assert await codes(emulator, 3) == [None] * 3
    status, effective = await request("PATCH", f"{emulator.base_url}/_emulator/config",
                                      {"pair_rate_limit_per_6s": 1, "pair_rate_burst": 1})
    assert status == 200
    assert (effective["pair_rate_limit_per_6s"], effective["pair_rate_burst"]) == (1, 1)
    assert await codes(emulator, 2, to=OTHER_PATIENT) == [None, 131056]
    await request("PATCH", f"{emulator.base_url}/_emulator/config", {"pair_rate_limit_per_6s": None})
    assert await codes(emulator, 2, to=OTHER_PATIENT) == [None, None]
    _, shown = await request("GET", f"{emulator.base_url}/_emulator/config")
    assert shown["pair_rate_limit_per_6s"] is None and shown["waba_id"] == "200000000000002"


@pytest.mark.parametrize("patch", [
    {"no_such_setting": 1},
    {"pair_rate_limit_per_6s": "ten"},
    {"batch_statuses": 0},
    {"duplicate_webhooks": 1.5},
    {"skip_delivered": "yes"},
    {"time_scale": 0},
    {"status_delays": {"sent": -1}},
    {"status_delays": {"seen": 1}},
    ["not", "an", "object"],
])
async def test_bad_config_patches_are_refused_whole(emulator: EmulatorServer, patch: object) -> None:
    _, before = await request("GET", f"{emulator.base_url}/_emulator/config")
    mixed = {"out_of_order_statuses": True, **patch} if isinstance(patch, dict) else patch  # a valid key too
    status, body = await request("PATCH", f"{emulator.base_url}/_emulator/config", mixed)
    assert status == 422 and "error" in body
    _, after = await request("GET", f"{emulator.base_url}/_emulator/config")
    assert after == before


async def test_config_round_trip(emulator: EmulatorServer) -> None:
    patch = {"throughput_limit_per_second": 80, "status_webhooks": False, "out_of_order_statuses": True,
             "skip_delivered": True, "duplicate_webhooks": 2, "batch_statuses": 10, "enforce_service_window": False,
             "time_scale": 0.01, "status_delays": {"read": None}, "template_review_seconds": 60}
    status, effective = await request("PATCH", f"{emulator.base_url}/_emulator/config", patch)
    assert status == 200
    for key, value in patch.items():
        if key != "status_delays":
            assert effective[key] == value
    assert effective["status_delays"] == {"sent": 0.01, "delivered": 0.01, "read": None}


async def test_clock_moves_only_forward_and_reset_keeps_it(emulator: EmulatorServer) -> None:
    _, before = await request("GET", f"{emulator.base_url}/_emulator/clock")
    after = await advance(emulator, 86_400)
    assert after["offset_seconds"] == 86_400 and after["now"] - before["now"] >= 86_400
    assert (await request("POST", f"{emulator.base_url}/_emulator/clock", {"advance_seconds": -5}))[0] == 422
    assert (await request("POST", f"{emulator.base_url}/_emulator/clock", {"advance_seconds": "soon"}))[0] == 422
    await request("DELETE", f"{emulator.base_url}/_emulator/messages")
    assert (await request("GET", f"{emulator.base_url}/_emulator/clock"))[1]["offset_seconds"] == 86_400
    await request("DELETE", f"{emulator.base_url}/_emulator/messages?clock=1")
    assert (await request("GET", f"{emulator.base_url}/_emulator/clock"))[1]["offset_seconds"] == 0


async def test_reset_forgets_rejections_and_buckets(start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(pair_rate_limit_per_6s=1)
    assert await codes(emulator, 2) == [None, 131056]
    await request("DELETE", f"{emulator.base_url}/_emulator/messages")
    _, found = await request("GET", f"{emulator.base_url}/_emulator/rejections")
    assert found["rejections"] == []
    assert await codes(emulator, 1) == [None]  # a fresh bucket


async def test_accepted_at_is_virtual_and_messages_filter(emulator: EmulatorServer) -> None:
    clock = await advance(emulator, 3600)
    await send_raw(emulator.base_url, template_payload())
    await send_raw(emulator.base_url, template_payload(to=OTHER_PATIENT))
    status, body = await send_raw(emulator.base_url, {"messaging_product": "whatsapp", "to": OTHER_PATIENT,
                                                       "type": "text", "text": {"body": "Hi"}})
    assert status == 200
    _, listed = await request("GET", f"{emulator.base_url}/_emulator/messages")
    assert all(m["accepted_at"] >= clock["now"] for m in listed["messages"])
    assert all(m["status"] == "accepted" and m["errors"] == [] for m in listed["messages"])
    _, texts = await request("GET", f"{emulator.base_url}/_emulator/messages?type=text")
    assert [m["id"] for m in texts["messages"]] == [body["messages"][0]["id"]]
    _, other = await request("GET", f"{emulator.base_url}/_emulator/messages?to={OTHER_DIGITS}&type=template")
    assert len(other["messages"]) == 1
    _, none = await request("GET", f"{emulator.base_url}/_emulator/messages?status=read")
    assert none["messages"] == []
