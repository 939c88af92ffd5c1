"""Request validation of text and interactive sends, over real HTTP, with Meta's error body and codes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from wa_helpers import PATIENT_DIGITS, buttons_payload, list_payload, request, send_raw, text_payload

from whatsapp.emulator import EmulatorServer


def rows(count: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "title": f"Row {i}", **extra} for i in range(start, start + count)]


def with_interactive(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    changed["interactive"].update(changes)
    return changed


def assert_meta_error(status: int, body: Any, code: int, details_part: str) -> None:
    assert status == 400
    error = body["error"]
    assert set(error) == {"message", "type", "code", "error_data", "fbtrace_id"}
    assert error["type"] == "OAuthException" and error["code"] == code
    assert error["message"].startswith(f"({'#'}{code}) ")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert details_part in error["error_data"]["details"]
    assert error["fbtrace_id"]


async def test_parameter_value_error_has_metas_exact_shape(emulator: EmulatorServer) -> None:
    status, body = await send_raw(emulator.base_url, buttons_payload("Confirm", "Reschedule", "Cancel", "Other"))
    assert_meta_error(status, body, 131009, "Buttons count invalid. Min: 1, Max: 3")
    assert body["error"]["message"] == "(#131009) Parameter value is not valid"


BUTTONS_OK = buttons_payload("Confirm", "Talk to staff")


@pytest.mark.parametrize(("payload", "code", "details"), [
    (buttons_payload(), 131009, "Buttons count invalid"),
    (buttons_payload("A" * 21), 131009, "Button title length invalid. Min length: 1, Max length: 20"),
    (buttons_payload("Same", "Same"), 131009, "Button title must be unique"),
    (buttons_payload("Confirm", body="b" * 1025), 131009, "Body text length invalid. Min length: 1, Max length: 1024"),
    (with_interactive(BUTTONS_OK, header={"type": "text", "text": "h" * 61}), 131009, "Header text length invalid"),
    (with_interactive(BUTTONS_OK, footer={"text": "f" * 61}), 131009, "Footer text length invalid"),
    (with_interactive(BUTTONS_OK, header={"type": "sticker"}), 100, "must be one of"),
    (with_interactive(BUTTONS_OK, body={}), 131008, "interactive['body']['text'] is required"),
    (with_interactive(BUTTONS_OK, type="carousel_of_doom"), 100, "interactive['type'] is not valid"),
    (with_interactive(BUTTONS_OK, action={"buttons": [{"type": "reply", "reply": {"id": "x"}}]}), 131008,
     "['title'] is required"),
    (with_interactive(BUTTONS_OK, action={"buttons": [{"type": "url", "reply": {"id": "x", "title": "Go"}}]}),
     131009, "only supported button type is reply"),
    (with_interactive(BUTTONS_OK, action={"buttons": [{"type": "reply", "reply": {"id": "i" * 257, "title": "Go"}}]}),
     131009, "Button id length invalid. Min length: 1, Max length: 256"),
    (with_interactive(BUTTONS_OK, action={"buttons": [{"type": "reply", "reply": {"id": "x", "title": "One"}},
                                                      {"type": "reply", "reply": {"id": "x", "title": "Two"}}]}),
     131009, "Button id must be unique"),
])
async def test_reply_button_limits(emulator: EmulatorServer, payload: dict[str, Any], code: int,
                                   details: str) -> None:
    status, body = await send_raw(emulator.base_url, payload)
    assert_meta_error(status, body, code, details)


@pytest.mark.parametrize(("payload", "code", "details"), [
    (list_payload([{"rows": rows(1)}], button="B" * 21), 131009, "Button text length invalid"),
    (list_payload([]), 131009, "Sections count invalid. Min: 1, Max: 10"),
    (list_payload([{"title": f"S{i}", "rows": rows(1, i)} for i in range(11)]), 131009, "Sections count invalid"),
    (list_payload([{"title": "A", "rows": rows(6)}, {"title": "B", "rows": rows(5, 6)}]), 131009,
     "Total row count exceed max allowed count: 10"),
    (list_payload([{"rows": rows(1)}, {"rows": rows(1, 1)}]), 131008, "required when there is more than one section"),
    (list_payload([{"title": "T" * 25, "rows": rows(1)}]), 131009, "Section title length invalid"),
    (list_payload([{"rows": [{"id": "r", "title": "T" * 25}]}]), 131009, "Row title length invalid. Min length: 1, "
                                                                       "Max length: 24"),
    (list_payload([{"rows": rows(1, description="d" * 73)}]), 131009, "Row description length invalid"),
    (list_payload([{"rows": [{"id": "i" * 201, "title": "T"}]}]), 131009, "Row id length invalid"),
    (list_payload([{"title": "A", "rows": rows(2)}, {"title": "B", "rows": rows(1)}]), 131009, "Row id must be unique"),
    (list_payload([{"title": "A", "rows": []}]), 131008, "['rows'] is required"),
    (list_payload([{"rows": [{"title": "No id"}]}]), 131008, "['id'] is required"),
    (list_payload([{"rows": rows(1)}], body="b" * 4097), 131009, "Max length: 4096"),
    (with_interactive(list_payload([{"rows": rows(1)}]), header={"type": "image", "image": {"id": "1"}}), 131009,
     "must be of type text"),
])
async def test_list_limits(emulator: EmulatorServer, payload: dict[str, Any], code: int, details: str) -> None:
    status, body = await send_raw(emulator.base_url, payload)
    assert_meta_error(status, body, code, details)


@pytest.mark.parametrize("payload", [
    buttons_payload("Confirm", "Reschedule", "C" * 20),
    with_interactive(BUTTONS_OK, header={"type": "text", "text": "h" * 60}, footer={"text": "f" * 60}),
    buttons_payload("Confirm", body="b" * 1024),
    list_payload([{"title": "Front desk", "rows": rows(5, description="d" * 72)},
                  {"title": "T" * 24, "rows": rows(5, 5)}], button="B" * 20),
    list_payload([{"rows": [{"id": "i" * 200, "title": "T" * 24}]}], body="b" * 4096),
    text_payload("t" * 4096, preview_url=True),
])
async def test_values_at_the_limits_are_accepted(emulator: EmulatorServer, payload: dict[str, Any]) -> None:
    status, body = await send_raw(emulator.base_url, payload)
    assert status == 200, body
    assert body["contacts"] == [{"input": payload["to"], "wa_id": PATIENT_DIGITS}]
    assert body["messages"][0]["id"].startswith("wamid.")


@pytest.mark.parametrize(("payload", "code", "details"), [
    (text_payload(""), 100, "text['body'] is required"),
    (text_payload("t" * 4097), 100, "at most 4096 characters"),
    (text_payload(preview_url="yes"), 100, "preview_url'] must be a boolean"),
])
async def test_text_limits(emulator: EmulatorServer, payload: dict[str, Any], code: int, details: str) -> None:
    status, body = await send_raw(emulator.base_url, payload)
    assert_meta_error(status, body, code, details)


async def test_refused_sends_are_listed_with_code_and_time(emulator: EmulatorServer) -> None:
    await send_raw(emulator.base_url, buttons_payload("A" * 21))
    await send_raw(emulator.base_url, text_payload(), token="wrong")
    assert (await send_raw(emulator.base_url, text_payload()))[0] == 200
    _, found = await request("GET", f"{emulator.base_url}/_emulator/rejections")
    assert [(r["code"], r["http_status"], r["wa_id"], r["type"]) for r in found["rejections"]] == [
        (131009, 400, PATIENT_DIGITS, "interactive"), (190, 401, None, None)]
    assert all(isinstance(r["at"], float) and not r["injected"] for r in found["rejections"])
    _, only = await request("GET", f"{emulator.base_url}/_emulator/rejections?code=190")
    assert len(only["rejections"]) == 1
