"""Parsing Meta's messages webhooks: every entry, change and item; unknown fields tolerated."""

from __future__ import annotations

import json
from typing import Any

import pytest

from whatsapp.webhook import WebhookPayloadError, parse_webhook

METADATA = {"display_phone_number": "12015550100", "phone_number_id": "100000000000001"}


def change(value: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    return {"value": {"messaging_product": "whatsapp", "metadata": METADATA, **value}, "field": field}


def body(*entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "200000000000002", "changes": changes} for changes in entries]}


SENT = {
    "id": "wamid.A1", "status": "sent", "timestamp": "1750857384", "recipient_id": "12015550123",
    "biz_opaque_callback_data": "outbox:42",
    "conversation": {"id": "a75d17ad06104c51166f948319b03c6a", "expiration_timestamp": "1750943820",
                     "origin": {"type": "utility"}},
    "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"},
    "some_future_field": {"nested": [1, 2]},
}
DELIVERED = {**SENT, "status": "delivered", "timestamp": "1750857390"}
READ = {"id": "wamid.A1", "status": "read", "timestamp": "1750857400", "recipient_id": "12015550123"}
FAILED = {
    "id": "wamid.B2", "status": "failed", "timestamp": "1750857401", "recipient_id": "12015550124",
    "errors": [{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                "error_data": {"details": "Message Undeliverable."}}],
}


def test_statuses_across_entries_and_changes() -> None:
    batch = parse_webhook(body(
        [change({"statuses": [SENT, DELIVERED]}),
         change({"event": "APPROVED"}, field="message_template_status_update")],
        [change({"statuses": [READ, FAILED]})],
    ))
    assert [(s.message_id, s.status) for s in batch.statuses] == [
        ("wamid.A1", "sent"), ("wamid.A1", "delivered"), ("wamid.A1", "read"), ("wamid.B2", "failed")]
    sent = batch.statuses[0]
    assert sent.timestamp == 1750857384
    assert sent.recipient_id == "12015550123"
    assert sent.phone_number_id == "100000000000001"
    assert sent.biz_opaque_callback_data == "outbox:42"
    assert sent.pricing == SENT["pricing"]
    assert sent.conversation is not None and sent.conversation["origin"] == {"type": "utility"}
    assert batch.statuses[2].pricing is None and batch.statuses[2].errors == ()
    failed = batch.statuses[3]
    assert [(e.code, e.title) for e in failed.errors] == [(131026, "Message undeliverable")]
    assert failed.errors[0].details == "Message Undeliverable."


def test_inbound_messages_of_each_kind() -> None:
    messages = [
        {"from": "12015550123", "id": "wamid.T", "timestamp": "1750857500", "type": "text",
         "text": {"body": "hello"}},
        {"from": "12015550123", "id": "wamid.Q", "timestamp": "1750857501", "type": "button",
         "context": {"from": "12015550100", "id": "wamid.A1"},
         "button": {"payload": "confirm:outbox:42", "text": "Confirm"}},
        {"from": "12015550125", "id": "wamid.I", "timestamp": "1750857502", "type": "interactive",
         "context": {"from": "12015550100", "id": "wamid.A2"},
         "interactive": {"type": "button_reply",
                         "button_reply": {"id": "handoff", "title": "Talk to staff"}}},
        {"from": "12015550125", "id": "wamid.L", "timestamp": "1750857503", "type": "interactive",
         "interactive": {"type": "list_reply", "list_reply": {"id": "billing", "title": "Billing"}}},
        {"from": "12015550126", "id": "wamid.U", "timestamp": "1750857504", "type": "unsupported",
         "errors": [{"code": 131051, "title": "Message type unknown"}]},
    ]
    contacts = [{"profile": {"name": "Test User"}, "wa_id": "12015550123"}]
    batch = parse_webhook(json.dumps(body([change({"contacts": contacts, "messages": messages})])).encode())
    text, button, reply, listed, unsupported = batch.messages
    assert (text.type, text.text, text.from_id) == ("text", "hello", "12015550123")
    assert text.timestamp == 1750857500
    assert (button.button_payload, button.button_text, button.context_message_id) == (
        "confirm:outbox:42", "Confirm", "wamid.A1")
    assert (reply.interactive_reply_id, reply.interactive_reply_title) == ("handoff", "Talk to staff")
    assert reply.context_message_id == "wamid.A2"
    assert listed.interactive_reply_id == "billing"
    assert unsupported.errors[0].code == 131051
    assert not hasattr(text, "profile_name")  # the contact's name is personal data we do not keep


def test_system_errors_in_value() -> None:
    batch = parse_webhook(body([change({"errors": [{"code": 131000, "title": "Something went wrong"}]})]))
    assert [(e.code, e.title) for e in batch.errors] == [(131000, "Something went wrong")]


def test_raw_bytes_with_meta_escapes() -> None:
    raw = (b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":'
           b'{"metadata":{"phone_number_id":"100000000000001"},"statuses":[{"id":"wamid.A","status":"sent",'
           b'"timestamp":"1","recipient_id":"12015550123","biz_opaque_callback_data":"caf\\u00e9\\/1"}]}}]}]}')
    assert parse_webhook(raw).statuses[0].biz_opaque_callback_data == "café/1"


def test_empty_entry_list_is_an_empty_batch() -> None:
    batch = parse_webhook(body())
    assert batch.statuses == [] and batch.messages == [] and batch.errors == []


@pytest.mark.parametrize("bad", [
    b"not json",
    b"[]",
    b'{"object":"page","entry":[]}',
    b'{"object":"whatsapp_business_account"}',
    b'{"object":"whatsapp_business_account","entry":[{"id":"1"}]}',
    b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":[]}]}]}',
    b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",'
    b'"value":{"statuses":[{"status":"sent","timestamp":"1"}]}}]}]}',
    b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",'
    b'"value":{"statuses":[{"id":"w","status":"sent","timestamp":"yesterday"}]}}]}]}',
    b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",'
    b'"value":{"messages":{"id":"w"}}}]}]}',
])
def test_bodies_that_are_not_webhooks_raise(bad: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_webhook(bad)
