"""Template management (Graph ``message_templates``), review on the virtual clock, statuses and their webhook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from wa_helpers import TOKEN, VERSION, WABA_ID, Receiver, request, send_raw, template_payload

from whatsapp.catalogue import TemplateCatalogue
from whatsapp.emulator import EmulatorServer
from whatsapp.webhook import parse_webhook

NEW_TEMPLATE = {
    "name": "lab_visit_reminder", "language": "en_US", "category": "UTILITY",
    "components": [{"type": "BODY", "text": "Your visit is on {{1}}.",
                    "example": {"body_text": [["Tuesday, December 1, 2026"]]}},
                   {"type": "FOOTER", "text": "Reply STOP to opt out."}],
}
NEW_SEND = template_payload(template={"name": "lab_visit_reminder", "language": {"code": "en_US"}, "components": [
    {"type": "body", "parameters": [{"type": "text", "text": "Tuesday, December 1, 2026"}]}]})


def templates_url(emulator: EmulatorServer, waba_id: str = WABA_ID, query: str = "") -> str:
    return f"{emulator.base_url}/{VERSION}/{waba_id}/message_templates{query}"


async def graph(method: str, url: str, body: Any = None, token: str = TOKEN) -> tuple[int, Any]:
    return await request(method, url, body, token=token)


async def set_status(emulator: EmulatorServer, status: str, name: str = "appointment_confirmation",
                     language: str = "en_US", **extra: Any) -> tuple[int, Any]:
    return await request("POST", f"{emulator.base_url}/_emulator/templates/status",
                         {"name": name, "language": language, "status": status, **extra})


async def test_lists_the_shipped_catalogue_as_approved(emulator: EmulatorServer) -> None:
    status, body = await graph("GET", templates_url(emulator, query="?limit=100"))
    assert status == 200
    shipped = {(t.name, t.language) for t in TemplateCatalogue.load()}
    assert {(t["name"], t["language"]) for t in body["data"]} == shipped
    assert all(t["status"] == "APPROVED" for t in body["data"])
    first = body["data"][0]
    assert set(first) == {"id", "name", "language", "status", "category", "components", "parameter_format"}
    assert first["id"].isdigit() and len({t["id"] for t in body["data"]}) == len(body["data"])
    assert set(body["paging"]["cursors"]) == {"before", "after"} and "next" not in body["paging"]


async def test_filters_fields_and_cursor_paging(emulator: EmulatorServer) -> None:
    _, named = await graph("GET", templates_url(emulator, query="?name=results_ready&fields=name,status"))
    assert {(t["name"], t["status"]) for t in named["data"]} == {("results_ready", "APPROVED")}
    assert all(set(t) == {"id", "name", "status"} for t in named["data"])
    _, none = await graph("GET", templates_url(emulator, query="?status=PAUSED"))
    assert none == {"data": []}
    seen: list[str] = []
    _, page = await graph("GET", templates_url(emulator, query="?limit=2"))
    while True:
        assert len(page["data"]) <= 2
        seen.extend(t["id"] for t in page["data"])
        if "next" not in page["paging"]:
            break
        after = page["paging"]["cursors"]["after"]
        _, page = await graph("GET", templates_url(emulator, query=f"?limit=2&after={after}"))
    _, everything = await graph("GET", templates_url(emulator, query="?limit=100"))
    assert seen == [t["id"] for t in everything["data"]]
    before = page["paging"]["cursors"]["before"]
    _, back = await graph("GET", templates_url(emulator, query=f"?limit=2&before={before}"))
    assert [t["id"] for t in back["data"]] == seen[-len(page["data"]) - 2:-len(page["data"])]


async def test_create_then_send(emulator: EmulatorServer) -> None:
    assert (await send_raw(emulator.base_url, NEW_SEND))[1]["error"]["code"] == 132001
    status, created = await graph("POST", templates_url(emulator), NEW_TEMPLATE)
    assert status == 200
    assert created["status"] == "APPROVED" and created["category"] == "UTILITY" and created["id"].isdigit()
    status, _ = await send_raw(emulator.base_url, NEW_SEND)
    assert status == 200
    _, listed = await graph("GET", templates_url(emulator, query="?name=lab_visit"))
    assert [t["id"] for t in listed["data"]] == [created["id"]]


@pytest.mark.parametrize(("change", "subcode", "details"), [
    ({"name": "Lab-Visit"}, None, "lowercase letters, digits and underscores"),
    ({"name": "x" * 513}, None, "at most 512"),
    ({"category": "GOSSIP"}, None, "MARKETING, UTILITY, AUTHENTICATION"),
    ({"language": "english please"}, None, "language code"),
    ({"components": []}, None, "components is required"),
    ({"components": [{"type": "FOOTER", "text": "only a footer"}]}, None, "needs a BODY"),
    ({"components": [{"type": "BODY", "text": "b" * 1025}]}, None, "at most 1024"),
    ({"name": "appointment_confirmation"}, 2388024, None),
])
async def test_creation_is_validated(emulator: EmulatorServer, change: dict[str, Any], subcode: int | None,
                                     details: str | None) -> None:
    status, body = await graph("POST", templates_url(emulator), {**NEW_TEMPLATE, **change})
    assert status == 400
    error = body["error"]
    assert error["code"] == 100 and error["type"] == "OAuthException"
    assert error.get("error_subcode") == subcode
    if details:
        assert details in error["error_data"]["details"]
    else:
        assert error["error_user_title"] == "Content in This Language Already Exists"


async def test_management_needs_the_token_and_the_right_waba(emulator: EmulatorServer) -> None:
    status, body = await graph("GET", templates_url(emulator), token="wrong")
    assert (status, body["error"]["code"]) == (401, 190)
    status, body = await graph("POST", templates_url(emulator, waba_id="299900000000000"), NEW_TEMPLATE)
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)
    assert (await graph("GET", templates_url(emulator, query="?limit=0")))[0] == 400
    assert (await graph("GET", templates_url(emulator, query="?after=%%%")))[0] == 400


async def test_review_runs_on_the_virtual_clock(receiver: Receiver,
                                                start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, template_review_seconds=3600)
    _, created = await graph("POST", templates_url(emulator), NEW_TEMPLATE)
    assert created["status"] == "PENDING"
    status, body = await send_raw(emulator.base_url, NEW_SEND)
    assert (status, body["error"]["code"]) == (404, 132001)
    _, pending = await graph("GET", templates_url(emulator, query="?status=PENDING"))
    assert [t["name"] for t in pending["data"]] == ["lab_visit_reminder"]
    await request("POST", f"{emulator.base_url}/_emulator/clock", {"advance_seconds": 3600})
    await receiver.until(lambda r: len(r.received) == 1)
    value = receiver.documents()[0]["entry"][0]["changes"][0]["value"]
    assert (value["event"], value["message_template_id"]) == ("APPROVED", int(created["id"]))
    assert (await send_raw(emulator.base_url, NEW_SEND))[0] == 200


async def test_paused_and_disabled_templates_cannot_be_sent(receiver: Receiver,
                                                            start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(webhook_url=receiver.url, status_webhooks=False)
    status, answer = await set_status(emulator, "PAUSED")
    assert status == 200 and answer["template"]["status"] == "PAUSED"
    await receiver.until(lambda r: len(r.received) == 1)
    document = receiver.documents()[0]
    [entry] = document["entry"]
    assert document["object"] == "whatsapp_business_account"
    assert entry["id"] == WABA_ID and isinstance(entry["time"], int)
    [change] = entry["changes"]
    assert change["field"] == "message_template_status_update"
    value = change["value"]
    assert {k: value[k] for k in ("event", "message_template_name", "message_template_language", "reason",
                                  "message_template_category")} == {
        "event": "PAUSED", "message_template_name": "appointment_confirmation",
        "message_template_language": "en_US", "reason": "NONE", "message_template_category": "UTILITY"}
    assert isinstance(value["message_template_id"], int) and value["other_info"]["title"] == "FIRST_PAUSE"
    [event] = parse_webhook(receiver.received[0][1]).template_statuses  # the service's parser reads it
    assert (event.name, event.language, event.event, event.reason, event.title, event.waba_id) == (
        "appointment_confirmation", "en_US", "PAUSED", "NONE", "FIRST_PAUSE", WABA_ID)
    assert event.template_id == str(value["message_template_id"]) and event.entry_time == entry["time"]
    status, body = await send_raw(emulator.base_url, template_payload())
    assert (status, body["error"]["code"], body["error"]["message"]) == (400, 132015, "(#132015) Template is Paused")
    await set_status(emulator, "DISABLED")
    assert (await send_raw(emulator.base_url, template_payload()))[1]["error"]["code"] == 132016
    await set_status(emulator, "REJECTED", reason="INVALID_FORMAT")
    assert (await send_raw(emulator.base_url, template_payload()))[1]["error"]["code"] == 132001
    await set_status(emulator, "APPROVED")
    assert (await send_raw(emulator.base_url, template_payload()))[0] == 200
    await receiver.until(lambda r: len(r.received) == 4)
    events = [d["entry"][0]["changes"][0]["value"] for d in receiver.documents()]
    assert [(v["event"], v["reason"]) for v in events] == [
        ("PAUSED", "NONE"), ("DISABLED", "NONE"), ("REJECTED", "INVALID_FORMAT"), ("APPROVED", "NONE")]
    assert "disable_info" in events[1]
    _, rejected = await request("GET", f"{emulator.base_url}/_emulator/rejections")
    assert [r["code"] for r in rejected["rejections"]] == [132015, 132016, 132001]
    _, deliveries = await request("GET", f"{emulator.base_url}/_emulator/webhooks?kind=template_status")
    assert len(deliveries["deliveries"]) == 4


async def test_status_endpoint_refuses_unknown_templates_and_statuses(emulator: EmulatorServer) -> None:
    assert (await set_status(emulator, "PAUSED", name="no_such_template"))[0] == 404
    assert (await set_status(emulator, "SNOOZED"))[0] == 422
    assert (await request("POST", f"{emulator.base_url}/_emulator/templates/status", {"name": "x"}))[0] == 422
    await set_status(emulator, "PAUSED")
    _, listed = await request("GET", f"{emulator.base_url}/_emulator/templates")
    paused = [t for t in listed["templates"] if t["status"] == "PAUSED"]
    assert [(t["name"], t["language"]) for t in paused] == [("appointment_confirmation", "en_US")]
    await request("DELETE", f"{emulator.base_url}/_emulator/messages?templates=1")
    _, listed = await request("GET", f"{emulator.base_url}/_emulator/templates")
    assert all(t["status"] == "APPROVED" for t in listed["templates"])
