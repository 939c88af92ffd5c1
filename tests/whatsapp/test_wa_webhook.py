"""Parsing Meta's webhooks: messages (with BSUIDs, system messages), statuses, template status and quality.

Shapes follow Meta's webhook references (Incoming messages, Status messages, System messages,
message_template_status_update, message_template_quality_update, Business-scoped user IDs); all numbers
are synthetic (+1 201-555-01xx) and BSUIDs are made up in Meta's documented format (``US.<digits>``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from whatsapp.webhook import (
    InboundMessage,
    TemplateQualityEvent,
    TemplateStatusEvent,
    WebhookPayloadError,
    parse_webhook,
)

METADATA = {"display_phone_number": "12015550100", "phone_number_id": "100000000000001"}


def change(value: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    return {"value": {"messaging_product": "whatsapp", "metadata": METADATA, **value}, "field": field}


def body(*entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "200000000000002", "changes": changes} for changes in entries]}


SENT = {
    "id": "wamid.A1", "status": "sent", "timestamp": "1700000000", "recipient_id": "12015550123",
    "biz_opaque_callback_data": "outbox:42",
    "conversation": {"id": "5f0000000000000000000000000000c1", "expiration_timestamp": "1700086400",
                     "origin": {"type": "utility"}},
    "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"},
    "some_future_field": {"nested": [1, 2]},
}
DELIVERED = {**SENT, "status": "delivered", "timestamp": "1700000006"}
READ = {"id": "wamid.A1", "status": "read", "timestamp": "1700000016", "recipient_id": "12015550123"}
FAILED = {
    "id": "wamid.B2", "status": "failed", "timestamp": "1700000017", "recipient_id": "12015550124",
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
    assert [t.event for t in batch.template_statuses] == ["APPROVED"]
    sent = batch.statuses[0]
    assert sent.timestamp == 1700000000
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
        {"from": "12015550123", "id": "wamid.T", "timestamp": "1755500100", "type": "text",
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
    assert text.timestamp == 1755500100
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


# -- business-scoped user ids ---------------------------------------------------------------------------------

BSUID = "US.1000000000000000001"
BSUID_2 = "US.20000000000000000002"


def text_message(**fields: Any) -> dict[str, Any]:
    return {"id": "wamid.M", "timestamp": "1755500100", "type": "text", "text": {"body": "hi"}, **fields}


def one_message(message: dict[str, Any], contacts: list[dict[str, Any]] | None = None) -> InboundMessage:
    value: dict[str, Any] = {"messages": [message]}
    if contacts is not None:
        value["contacts"] = contacts
    [parsed] = parse_webhook(body([change(value)])).messages
    return parsed


def test_message_with_number_and_bsuid() -> None:
    contacts = [{"profile": {"name": "Test User", "username": "@tester"}, "wa_id": "12015550123", "user_id": BSUID}]
    message = one_message(text_message(**{"from": "12015550123", "from_user_id": BSUID}), contacts)
    assert (message.from_id, message.from_user_id) == ("12015550123", BSUID)


def test_username_user_without_a_number() -> None:
    contacts = [{"profile": {"name": "Test User", "username": "@tester"}, "user_id": BSUID}]
    message = one_message(text_message(from_user_id=BSUID), contacts)
    assert (message.from_id, message.from_user_id) == (None, BSUID)
    assert not any(getattr(message, f) == "@tester" for f in message.__slots__)  # usernames are not kept


def test_missing_identifier_is_taken_from_the_matching_contact() -> None:
    contacts = [{"wa_id": "12015550124", "user_id": BSUID_2}, {"wa_id": "12015550123", "user_id": BSUID}]
    by_number = one_message(text_message(**{"from": "12015550123"}), contacts)
    assert (by_number.from_id, by_number.from_user_id) == ("12015550123", BSUID)
    by_bsuid = one_message(text_message(from_user_id=BSUID_2), contacts)
    assert (by_bsuid.from_id, by_bsuid.from_user_id) == ("12015550124", BSUID_2)


def test_the_only_contact_completes_a_message_that_names_no_sender() -> None:
    message = one_message(text_message(), [{"wa_id": "12015550123", "user_id": BSUID}])
    assert (message.from_id, message.from_user_id) == ("12015550123", BSUID)


def test_a_contact_that_contradicts_the_message_is_not_used() -> None:
    message = one_message(text_message(**{"from": "12015550123"}), [{"wa_id": "12015550124", "user_id": BSUID}])
    assert (message.from_id, message.from_user_id) == ("12015550123", None)
    several = one_message(text_message(**{"from": "12015550125"}),
                          [{"wa_id": "12015550123", "user_id": BSUID}, {"wa_id": "12015550124", "user_id": BSUID_2}])
    assert several.from_user_id is None


@pytest.mark.parametrize("contacts", [None, [], [{"profile": {"name": "Test User"}}],
                                      [{"wa_id": "12015550123"}, {"wa_id": "12015550124"}]])
def test_a_message_must_name_its_sender(contacts: list[dict[str, Any]] | None) -> None:
    with pytest.raises(WebhookPayloadError, match="neither from nor from_user_id"):
        one_message(text_message(), contacts)


def test_status_recipient_bsuid() -> None:
    contacts = [{"wa_id": "12015550123", "user_id": BSUID}]
    to_bsuid = {"id": "wamid.S1", "status": "delivered", "timestamp": "1755500300", "recipient_user_id": BSUID}
    to_number = {"id": "wamid.S2", "status": "read", "timestamp": "1750857701", "recipient_id": "12015550123"}
    failed = {"id": "wamid.S3", "status": "failed", "timestamp": "1750857702", "recipient_id": "12015550124",
              "errors": [{"code": 131026, "title": "Message undeliverable"}]}
    batch = parse_webhook(body([change({"contacts": contacts, "statuses": [to_bsuid, to_number]}),
                                change({"statuses": [failed]})]))  # failed statuses come without contacts
    assert [(s.recipient_id, s.recipient_user_id) for s in batch.statuses] == [
        ("12015550123", BSUID), ("12015550123", BSUID), ("12015550124", None)]


# -- system messages ------------------------------------------------------------------------------------------

def system_message(system: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": "wamid.SYS", "timestamp": "1755500200", "type": "system", "system": system, **fields}


def test_user_changed_number() -> None:
    message = one_message(system_message(
        {"body": "User Test User changed from 12015550123 to 12015550124", "wa_id": "12015550124",
         "user_id": BSUID_2, "type": "user_changed_number"},
        **{"from": "12015550123", "from_user_id": BSUID}))
    assert (message.type, message.system_type) == ("system", "user_changed_number")
    assert (message.from_id, message.from_user_id) == ("12015550123", BSUID)
    assert (message.new_wa_id, message.new_user_id) == ("12015550124", BSUID_2)
    assert message.text is None  # the system body quotes the profile name and both numbers: not kept


def test_older_customer_changed_number_spelling() -> None:
    message = one_message(system_message(
        {"body": "Test User changed from 12015550123 to 12015550124", "new_wa_id": "12015550124",
         "customer": "12015550123", "type": "customer_changed_number"}))
    assert (message.system_type, message.from_id, message.new_wa_id) == (
        "user_changed_number", "12015550123", "12015550124")


def test_user_changed_user_id() -> None:
    message = one_message(system_message({"body": "User changed their business-scoped user ID", "user_id": BSUID_2,
                                          "type": "user_changed_user_id"}, from_user_id=BSUID))
    assert (message.system_type, message.from_id, message.from_user_id) == ("user_changed_user_id", None, BSUID)
    assert (message.new_wa_id, message.new_user_id) == (None, BSUID_2)


# -- interactive replies --------------------------------------------------------------------------------------

def interactive(content: dict[str, Any]) -> InboundMessage:
    return one_message({"from": "12015550123", "id": "wamid.I", "timestamp": "1", "type": "interactive",
                        "interactive": content})


def test_interactive_type_is_kept() -> None:
    button = interactive({"type": "button_reply", "button_reply": {"id": "confirm", "title": "Confirm"}})
    listed = interactive({"type": "list_reply", "list_reply": {"id": "billing", "title": "Billing",
                                                               "description": "Invoices and payments"}})
    flow = interactive({"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
                                                           "response_json": "{\"flow_token\": \"t\"}"}})
    untyped = interactive({"list_reply": {"id": "billing", "title": "Billing"}})
    assert [(m.interactive_type, m.interactive_reply_id, m.interactive_reply_title)
            for m in (button, listed, flow, untyped)] == [
        ("button_reply", "confirm", "Confirm"), ("list_reply", "billing", "Billing"), ("nfm_reply", None, None),
        (None, "billing", "Billing")]


# -- template status and quality ------------------------------------------------------------------------------

def template_change(value: dict[str, Any], field: str = "message_template_status_update",
                    time: int | None = 1700000000) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": "100000000000002", "changes": [{"value": value, "field": field}]}
    if time is not None:
        entry["time"] = time
    return {"object": "whatsapp_business_account", "entry": [entry]}


def test_template_status_events() -> None:
    approved = {"event": "APPROVED", "message_template_id": 100000000000011,
                "message_template_name": "appointment_confirmation", "message_template_language": "en_US",
                "reason": "NONE", "message_template_category": "UTILITY"}
    rejected = {**approved, "event": "REJECTED", "reason": "INVALID_FORMAT",
                "rejection_info": {"reason": "Variables at the end", "recommendation": "Add text after it"}}
    paused = {**approved, "event": "PAUSED", "reason": "NONE",
              "other_info": {"title": "FIRST_PAUSE", "description": "Paused for 3 hours"}}
    deleting = {**approved, "event": "PENDING_DELETION", "reason": None}
    parsed = [parse_webhook(template_change(v)).template_statuses[0] for v in (approved, rejected, paused, deleting)]
    assert parsed[0] == TemplateStatusEvent(
        template_id="100000000000011", name="appointment_confirmation", language="en_US", event="APPROVED",
        reason="NONE", category="UTILITY", title=None, waba_id="100000000000002", entry_time=1700000000)
    assert [(t.event, t.reason, t.title) for t in parsed] == [
        ("APPROVED", "NONE", None), ("REJECTED", "INVALID_FORMAT", None), ("PAUSED", "NONE", "FIRST_PAUSE"),
        ("PENDING_DELETION", None, None)]
    assert parse_webhook(template_change(approved, time=None)).template_statuses[0].entry_time is None


def test_template_quality_updates_have_their_own_list() -> None:
    value = {"previous_quality_score": "GREEN", "new_quality_score": "YELLOW", "message_template_id": 100000000000011,
             "message_template_name": "appointment_confirmation", "message_template_language": "en_US"}
    expected = TemplateQualityEvent(template_id="100000000000011", name="appointment_confirmation",
                                    language="en_US", new_score="YELLOW", previous_score="GREEN",
                                    waba_id="100000000000002", entry_time=1755500400)
    for field in ("message_template_quality_update", "message_template_status_update"):  # the second: docs' typo
        batch = parse_webhook(template_change(value, field=field, time=1755500400))
        assert batch.template_quality == [expected] and batch.template_statuses == []


def test_template_events_alongside_messages() -> None:
    document = body([change({"statuses": [READ]})])
    document["entry"].append(template_change({"event": "DISABLED", "message_template_name": "results_ready",
                                              "message_template_language": "es", "reason": None})["entry"][0])
    batch = parse_webhook(document)
    assert [s.message_id for s in batch.statuses] == ["wamid.A1"]
    assert [(t.name, t.language, t.event) for t in batch.template_statuses] == [("results_ready", "es", "DISABLED")]


@pytest.mark.parametrize("value", [{"message_template_name": "x"}, {"event": ""}, {"event": 3}])
def test_template_status_without_event_raises(value: dict[str, Any]) -> None:
    with pytest.raises(WebhookPayloadError, match="event is missing"):
        parse_webhook(template_change(value))


def test_other_fields_are_ignored() -> None:
    batch = parse_webhook(template_change({"phone_number": "12015550100", "event": "VERIFIED_ACCOUNT"},
                                          field="account_update"))
    assert batch == parse_webhook(body())


# -- raw bytes as Meta sends them -----------------------------------------------------------------------------

def test_raw_message_with_slash_and_unicode_escapes() -> None:
    raw = (b'{"object":"whatsapp_business_account","entry":[{"id":"100000000000002","changes":[{"value":'
           b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"12015550100",'
           b'"phone_number_id":"100000000000001"},"contacts":[{"profile":{"name":"Jos\\u00e9"},'
           b'"wa_id":"12015550123","user_id":"US.1000000000000000001"}],"messages":[{"from":"12015550123",'
           b'"id":"wamid.HBgLMTIwMTU1NTAxMjMVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=","timestamp":"1755500100",'
           b'"type":"text","text":{"body":"\\u00bfMa\\u00f1ana a las 10:30? S\\u00ed \\/ ok \\ud83d\\udc4d"}}]},'
           b'"field":"messages"}]}]}')
    [message] = parse_webhook(raw).messages
    assert message.text == "¿Mañana a las 10:30? Sí / ok 👍"
    assert message.from_user_id == BSUID
    assert message.message_id.endswith("MUMxMAA=")


def test_raw_template_status_with_escapes_and_integer_id() -> None:
    raw = (b'{"entry":[{"id":"100000000000002","time":1700000000,"changes":[{"value":{"event":"REJECTED",'
           b'"message_template_id":100000000000011,"message_template_name":"results_ready",'
           b'"message_template_language":"es","reason":"INVALID_FORMAT","message_template_category":"UTILITY",'
           b'"rejection_info":{"reason":"El bot\\u00f3n \\/l\\/{{1}} no es v\\u00e1lido","recommendation":"-"}},'
           b'"field":"message_template_status_update"}]}],"object":"whatsapp_business_account"}')
    [event] = parse_webhook(raw).template_statuses
    assert (event.template_id, event.name, event.language, event.event, event.reason, event.entry_time) == (
        "100000000000011", "results_ready", "es", "REJECTED", "INVALID_FORMAT", 1700000000)


def test_raw_utf8_bytes_without_escapes() -> None:
    raw = json.dumps(body([change({"messages": [text_message(**{"from": "12015550123", "text": {
        "body": "Cancelar cita ✓"}})]})]), ensure_ascii=False).encode("utf-8")
    assert parse_webhook(raw).messages[0].text == "Cancelar cita ✓"
