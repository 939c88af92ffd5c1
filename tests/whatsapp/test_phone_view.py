"""The patient's phone: what each stored message shows (pure rendering, on the shipped templates and the real
interactive builders), what a tap sends back, and the page's routes on an emulator over loopback HTTP (a tap
is a signed inbound webhook, a form without the CSRF token is refused, no number appears in a URL)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from wa_helpers import APP_SECRET, PATIENT, PATIENT_DIGITS, Receiver, send_raw, template_payload

from whatsapp.catalogue import TemplateCatalogue, parse_template
from whatsapp.emulator import EmulatorServer, StatusDelays
from whatsapp.emulator.phone_view import (
    TapError,
    format_text,
    inbound_bubble,
    mask_number,
    outbound_bubble,
    tap_inbound,
    ticks_for,
)
from whatsapp.interactive import list_message, reply_buttons, text_message
from whatsapp.signature import verify

CATALOGUE = TemplateCatalogue.load(public_base_url="https://bridge.example.org")
lookup = CATALOGUE.get


def stored(payload: dict[str, Any], statuses: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """An ``AcceptedMessage.to_json()`` as the emulator keeps it."""
    return {"id": "wamid.TEST1", "type": payload.get("type", "text"), "accepted_at": 1_796_000_000.5,
            "statuses": list(statuses), "errors": [], "payload": payload, **extra}


def test_template_shows_filled_body_footer_and_its_real_button_labels() -> None:
    bubble = outbound_bubble(stored(template_payload()), lookup)
    assert bubble.body.startswith("You have an appointment on Tuesday, December 1, 2026 at 10:30 AM, Main Campus.")
    assert "{{" not in bubble.body
    assert bubble.footer == "No medical advice. Reply STOP to opt out."
    assert [(b.kind, b.label, b.key) for b in bubble.buttons] == [
        ("reply", "Confirm", "0"), ("reply", "Reschedule", "1"), ("reply", "Cancel", "2"),
        ("reply", "Talk to staff", "3")]
    assert not bubble.mine and bubble.timestamp == 1_796_000_000 and bubble.ticks == "accepted"


def test_spanish_template_uses_the_spanish_labels() -> None:
    payload = template_payload()
    payload["template"]["language"]["code"] = "es"
    labels = [b.label for b in outbound_bubble(stored(payload), lookup).buttons]
    es = CATALOGUE.get("appointment_confirmation", "es")
    assert es is not None and labels == [shape.text for shape in es.buttons] and "Confirm" not in labels


def test_url_button_opens_the_approved_url_with_its_parameter() -> None:
    payload = template_payload(template={"name": "results_ready", "language": {"code": "en_US"}, "components": [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "TOKEN123"}]}]})
    link, staff = outbound_bubble(stored(payload), lookup).buttons
    assert (link.kind, link.label, link.url) == ("link", "View in portal", "https://bridge.example.org/l/TOKEN123")
    assert (staff.kind, staff.label) == ("reply", "Talk to staff")


def test_named_parameters_and_a_text_header() -> None:
    template = parse_template({"name": "named", "language": "en_US", "parameter_format": "NAMED", "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Hello {{who}}"},
        {"type": "BODY", "text": "See you on {{day}} at {{time}}; *bring* nothing."}]})
    payload = template_payload(template={"name": "named", "language": {"code": "en_US"}, "components": [
        {"type": "header", "parameters": [{"type": "text", "parameter_name": "who", "text": "there"}]},
        {"type": "body", "parameters": [{"type": "text", "parameter_name": "time", "text": "10:30"},
                                        {"type": "text", "parameter_name": "day", "text": "Monday"}]}]})
    bubble = outbound_bubble(stored(payload), lambda name, language: template)
    assert (bubble.header, bubble.body) == ("Hello there", "See you on Monday at 10:30; *bring* nothing.")
    assert bubble.footer is None and bubble.buttons == ()


def test_a_template_outside_the_registry_says_so() -> None:
    payload = template_payload(template={"name": "gone", "language": {"code": "en_US"}})
    bubble = outbound_bubble(stored(payload), lookup)
    assert bubble.note is not None and "gone" in bubble.note and bubble.buttons == ()


def test_interactive_buttons_list_and_text() -> None:
    buttons = reply_buttons("Menu", [("s", "Talk to staff"), ("x", "Stop")], footer="No medical advice.")
    bubble = outbound_bubble(stored(buttons), lookup)
    assert (bubble.body, bubble.footer, [b.label for b in bubble.buttons]) == (
        "Menu", "No medical advice.", ["Talk to staff", "Stop"])
    listed = list_message("Choose a new time:", "Choose time", [
        ("slot-a", "Mon 09:00", "North Campus"), ("slot-b", "Mon 10:00", None)])
    bubble = outbound_bubble(stored(listed), lookup)
    assert bubble.list_label == "Choose time"
    assert [(b.label, b.description) for b in bubble.buttons] == [("Mon 09:00", "North Campus"), ("Mon 10:00", None)]
    text = outbound_bubble(stored(text_message("Thank you.")), lookup)
    assert (text.body, text.buttons) == ("Thank you.", ())


def test_ticks_follow_the_furthest_status_whatever_the_order() -> None:
    assert ticks_for([]) == "accepted"
    assert ticks_for(["delivered", "sent"]) == "delivered"
    assert ticks_for(["sent", "delivered", "read"]) == "read"
    assert ticks_for(["sent", "failed"]) == "failed"
    failed = stored({"type": "text", "text": {"body": "x"}}, ("failed",),
                    errors=[{"code": 131047, "title": "Re-engagement message"}])
    assert outbound_bubble(failed, lookup).error == "Re-engagement message"


def test_the_patients_own_messages() -> None:
    tap = {"id": "wamid.IN", "timestamp": "1796000001", "type": "button",
           "button": {"payload": "p", "text": "Confirm"}}
    bubble = inbound_bubble(tap, delivered=True)
    assert (bubble.mine, bubble.body, bubble.ticks, bubble.timestamp) == (True, "Confirm", "delivered", 1_796_000_001)
    row = {"id": "w", "timestamp": "1", "type": "interactive",
           "interactive": {"type": "list_reply", "list_reply": {"id": "r", "title": "Mon 09:00"}}}
    assert inbound_bubble(row, delivered=False).body == "Mon 09:00"
    assert inbound_bubble(row, delivered=False).ticks == "failed"
    assert inbound_bubble({"id": "w", "timestamp": "1", "type": "text", "text": {"body": "hi"}}, True).body == "hi"


def test_a_tap_sends_back_what_whatsapp_would() -> None:
    message = stored(template_payload())
    assert tap_inbound(message, "0", lookup) == {"button": {"payload": "confirm:ob-1", "text": "Confirm"},
                                                 "context": "wamid.TEST1"}
    # A quick reply sent without a payload comes back with its label as the payload, as on Cloud API.
    assert tap_inbound(message, "1", lookup)["button"] == {"payload": "Reschedule", "text": "Reschedule"}
    for bad in ("9", "x", "", "-1"):
        with pytest.raises(TapError):
            tap_inbound(message, bad, lookup)
    buttons = stored(reply_buttons("Menu", [("s", "Talk to staff")]))
    assert tap_inbound(buttons, "0", lookup)["button_reply"] == {"id": "s", "title": "Talk to staff"}
    listed = stored(list_message("Pick", "Choose", [("a", "Mon 09:00", "North"), ("b", "Mon 10:00", None)]))
    assert tap_inbound(listed, "0", lookup)["list_reply"] == {"id": "a", "title": "Mon 09:00", "description": "North"}
    assert tap_inbound(listed, "1", lookup)["list_reply"] == {"id": "b", "title": "Mon 10:00"}
    with pytest.raises(TapError):
        tap_inbound(stored({"type": "text", "text": {"body": "x"}}), "0", lookup)


def test_url_buttons_cannot_be_tapped_as_replies() -> None:
    payload = template_payload(template={"name": "results_ready", "language": {"code": "en_US"}, "components": [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "T"}]}]})
    with pytest.raises(TapError):
        tap_inbound(stored(payload), "0", lookup)


def test_formatting_escapes_first_then_styles_and_links() -> None:
    assert str(format_text("*bold* _it_ ~no~ ```mono```")) == (
        "<strong>bold</strong> <em>it</em> <s>no</s> <code>mono</code>")
    assert str(format_text("<script>alert(1)</script> a*b*c")) == "&lt;script&gt;alert(1)&lt;/script&gt; a*b*c"
    linked = str(format_text("see https://x.example/l/a_b_c?q=1&r=2 now"))
    assert '<a href="https://x.example/l/a_b_c?q=1&amp;r=2" rel="noopener noreferrer"' in linked
    assert "<em>" not in linked


def test_numbers_are_masked_but_for_the_last_two_digits() -> None:
    assert mask_number("12015550123") == "+•••••••••23"
    assert "0123" not in mask_number("12015550123")


# -- the page's routes, over loopback HTTP ----------------------------------------------------------------


@pytest.fixture
def wired(receiver: Receiver, start_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    return start_emulator(webhook_url=receiver.url, status_delays=StatusDelays(sent=0.01, delivered=None))


async def test_tapping_confirm_on_the_page_posts_a_signed_button_webhook(wired: EmulatorServer,
                                                                       receiver: Receiver) -> None:
    status, answer = await send_raw(wired.base_url, template_payload())
    assert status == 200
    wamid = answer["messages"][0]["id"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{wired.base_url}/_emulator/phone") as listing:
            page = await listing.text()
            assert "Content-Security-Policy" in listing.headers and "script-src 'self'" in page + str(listing.headers)
        assert PATIENT_DIGITS[-4:] not in page and "+•••••••••23" in page
        [chat_url] = re.findall(r'href="(/_emulator/phone/chats/[0-9a-f]+)"', page)
        async with session.get(f"{wired.base_url}{chat_url}") as chat:
            html = await chat.text()
        assert "Tuesday, December 1, 2026 at 10:30 AM, Main Campus" in html
        assert re.search(r'<button type="submit" name="choice" value="0">.*? Confirm</button>', html)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "message_id": wamid, "choice": "0"}
        async with session.post(f"{wired.base_url}{chat_url}/tap", data={**form, "csrf": "forged"},
                                headers={"Accept": "application/json"}) as forged:
            assert forged.status == 403
        async with session.post(f"{wired.base_url}{chat_url}/tap", data=form, allow_redirects=False) as tapped:
            assert tapped.status == 303 and tapped.headers["Location"] == chat_url
        await receiver.until(lambda r: r.messages())
        [(headers, body)] = [(h, b) for h, b in receiver.received if b'"messages":[' in b]
        assert verify(body, headers.get("X-Hub-Signature-256"), [APP_SECRET.encode()])
        [item] = receiver.messages()
        assert item["from"] == PATIENT_DIGITS and item["context"]["id"] == wamid
        assert item["button"] == {"payload": "confirm:ob-1", "text": "Confirm"}
        async with session.post(f"{wired.base_url}{chat_url}/reply", data={"csrf": csrf.group(1), "text": "hi"},
                                headers={"Accept": "application/json"}) as replied:
            assert (replied.status, (await replied.json())["outcome"]) == (200, "delivered")
        async with session.get(f"{wired.base_url}{chat_url}/log") as log:
            fragment = (await log.json())["html"]
        assert fragment.index("Confirm</p>") < fragment.index(">hi</p>")  # the patient's bubbles, in order
        async with session.get(f"{wired.base_url}/_emulator/phone/chats/0000") as missing:
            assert missing.status == 404
    assert PATIENT not in fragment
