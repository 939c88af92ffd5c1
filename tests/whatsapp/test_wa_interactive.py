"""The interactive/text builders and the emulator's request validation agree on every shape and limit."""

from __future__ import annotations

from typing import Any

import pytest

from mappings.conversation import Conversation
from whatsapp import interactive as builders
from whatsapp.catalogue import Template
from whatsapp.emulator import interactive as emulator_limits
from whatsapp.emulator import validation
from whatsapp.emulator.graph_errors import GraphError
from whatsapp.emulator.validation import ValidSend, validate_send
from whatsapp.interactive import list_message, reply_buttons, shorten, text_message

PATIENT = "+1 201-555-0123"  # synthetic


class NoTemplates:
    def get(self, name: str, language: str) -> Template | None:
        return None


def send(message: dict[str, Any]) -> ValidSend:
    return validate_send({"messaging_product": "whatsapp", "to": PATIENT, **message}, NoTemplates())


def test_limits_are_the_emulators() -> None:
    names = ["MAX_BUTTON_BODY", "MAX_LIST_BODY", "MAX_FOOTER_TEXT", "MAX_REPLY_BUTTONS", "MAX_BUTTON_TITLE",
             "MAX_BUTTON_ID", "MAX_LIST_BUTTON", "MAX_ROWS", "MAX_SECTION_TITLE", "MAX_ROW_TITLE",
             "MAX_ROW_DESCRIPTION", "MAX_ROW_ID"]
    for name in names:
        assert getattr(builders, name) == getattr(emulator_limits, name), name
    assert builders.MAX_TEXT_BODY == validation.MAX_TEXT_BODY


def test_text_message() -> None:
    message = text_message("Thank you, your appointment is confirmed.")
    assert message == {"type": "text", "text": {"body": "Thank you, your appointment is confirmed.",
                                                "preview_url": False}}
    assert send(message).type == "text"
    assert send(text_message("x" * 4096)).free_form
    for bad in ("", "   ", "x" * 4097):
        with pytest.raises(ValueError):
            text_message(bad)


def test_reply_buttons_shape_and_acceptance() -> None:
    message = reply_buttons("Do you want to cancel?", [("a:1", "Yes, cancel"), ("a:2", "No, keep it")],
                            footer="Clinic")
    assert message == {"type": "interactive", "interactive": {
        "type": "button",
        "body": {"text": "Do you want to cancel?"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "a:1", "title": "Yes, cancel"}},
                               {"type": "reply", "reply": {"id": "a:2", "title": "No, keep it"}}]},
        "footer": {"text": "Clinic"},
    }}
    assert send(message).type == "interactive"


def test_reply_buttons_at_the_limits_are_accepted() -> None:
    buttons = [("i" * 255 + str(n), f"{n}" + "t" * 30) for n in range(3)]
    message = reply_buttons("b" * 1024, buttons, footer="f" * 60)
    titles = [b["reply"]["title"] for b in message["interactive"]["action"]["buttons"]]
    assert all(len(title) == 20 and title.endswith("…") for title in titles)
    send(message)


@pytest.mark.parametrize(("body", "buttons", "footer", "message"), [
    ("b", [], None, "1 to 3 buttons"),
    ("b", [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d")], None, "1 to 3 buttons"),
    ("b", [("1", "a"), ("1", "b")], None, "unique"),
    ("b", [("1", "x" * 25 + "a"), ("2", "x" * 25 + "b")], None, "unique"),  # equal once shortened
    ("b", [("1", "a"), ("2", "a")], None, "unique"),
    ("b", [("", "a")], None, "empty"),
    ("b", [("1", " ")], None, "empty"),
    ("b", [("i" * 257, "a")], None, "at most 256"),
    ("b" * 1025, [("1", "a")], None, "at most 1024"),
    ("", [("1", "a")], None, "empty"),
    ("b", [("1", "a")], "f" * 61, "at most 60"),
])
def test_reply_buttons_refuse_impossible_input(body: str, buttons: list[tuple[str, str]], footer: str | None,
                                               message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reply_buttons(body, buttons, footer=footer)


def test_list_message_shape_and_acceptance() -> None:
    message = list_message("Choose a new time:", "Choose time",
                           [("slot:1", "Tue 1 Dec 10:30", None), ("slot:2", "Wed 2 Dec 09:00", "Main Campus")],
                           section_title="Free times")
    assert message == {"type": "interactive", "interactive": {
        "type": "list",
        "body": {"text": "Choose a new time:"},
        "action": {"button": "Choose time", "sections": [{
            "rows": [{"id": "slot:1", "title": "Tue 1 Dec 10:30"},
                     {"id": "slot:2", "title": "Wed 2 Dec 09:00", "description": "Main Campus"}],
            "title": "Free times",
        }]},
    }}
    send(message)


def test_list_message_at_the_limits_is_accepted() -> None:
    rows = [("r" * 199 + str(n), "t" * 30, "d" * 100) for n in range(10)]
    message = list_message("b" * 4096, "B" * 30, rows, section_title="S" * 30)
    action = message["interactive"]["action"]
    assert len(action["button"]) == 20 and len(action["sections"][0]["title"]) == 24
    assert all(len(row["title"]) == 24 and len(row["description"]) == 72 for row in action["sections"][0]["rows"])
    send(message)


@pytest.mark.parametrize(("rows", "button", "message"), [
    ([], "Choose", "1 to 10 rows"),
    ([(str(n), "t", None) for n in range(11)], "Choose", "1 to 10 rows"),
    ([("1", "a", None), ("1", "b", None)], "Choose", "unique"),
    ([("r" * 201, "a", None)], "Choose", "at most 200"),
    ([("1", "", None)], "Choose", "empty"),
    ([("1", "a", None)], "", "empty"),
])
def test_list_message_refuses_impossible_input(rows: list[tuple[str, str, str | None]], button: str,
                                               message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list_message("b", button, rows)


def test_the_emulator_would_have_refused_what_the_builders_refuse() -> None:
    """Guard against the builders being stricter or looser than the emulator on the same inputs."""
    too_many = reply_buttons("b", [("1", "a")])
    too_many["interactive"]["action"]["buttons"] *= 4
    with pytest.raises(GraphError):
        send(too_many)
    long_title = reply_buttons("b", [("1", "a")])
    long_title["interactive"]["action"]["buttons"][0]["reply"]["title"] = "x" * 21
    with pytest.raises(GraphError):
        send(long_title)


def test_shorten() -> None:
    assert shorten("  Talk to staff  ", 20) == "Talk to staff"
    assert shorten("Hablar con el personal", 20) == "Hablar con el perso…"
    assert shorten("abc defghi", 5) == "abc…"


@pytest.mark.parametrize("language", ["en_US", "es", "zh_CN"])
def test_every_language_builds_messages_the_emulator_accepts(language: str) -> None:
    conversation = Conversation.load()

    def say(key: str, **values: str) -> str:
        return conversation.render(key, language, "en_US", **values)[0]

    send(reply_buttons(say("menu"), [("menu:staff", say("menu_staff")), ("menu:stop", say("menu_stop"))]))
    send(reply_buttons(say("cancel_ask", date="2026-12-01", time="10:30"),
                       [("cancel:yes", say("yes_cancel")), ("cancel:no", say("no_keep"))]))
    send(list_message(say("slots_prompt"), say("slots_button"),
                      [(f"slot:{n}", f"2026-12-0{n} 10:30", None) for n in range(1, 4)]))
    for key in ("welcome", "emergency", "sensitive", "confirmed", "not_allowed", "expired"):
        send(text_message(say(key)))
