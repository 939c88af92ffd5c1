"""Builders for the ``type: text`` and ``type: interactive`` message bodies of the Cloud API.

Sources: Meta's "Interactive reply buttons messages" and "Interactive list messages" pages
(https://developers.facebook.com/docs/whatsapp/cloud-api/messages/interactive-reply-buttons-messages,
…/interactive-list-messages) and "Text messages". The limits are those the emulator enforces
(:mod:`whatsapp.emulator.interactive`); a test keeps the two equal:

* reply buttons: 1-3 buttons, id 1-256 characters and unique, title 1-20 characters and unique,
  body 1-1,024 characters, footer 1-60;
* list: 1-10 rows in one section, row id 1-200 and unique, row title 1-24, description 0-72,
  button label 1-20, section title 1-24, body 1-4,096;
* text: body 1-4,096 characters, ``preview_url`` false (links in replies are never previewed).

Labels (button and row titles, the list button, section titles, row descriptions) that are too long
are shortened with "…": a translation one letter too long must not stop a reply. Everything else that
is impossible — no buttons, four buttons, eleven rows, a duplicate id, an empty or over-long body, id
or footer, two titles equal after shortening — raises :class:`ValueError`.

The result is the message part of a send request: the caller adds ``messaging_product``, ``to`` and,
if it wants, ``biz_opaque_callback_data``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Meta's limits; tests/whatsapp/test_wa_interactive.py checks they equal the emulator's. Not imported from
# whatsapp.emulator: importing that package starts to load the emulator's web app.
MAX_BUTTON_BODY = 1024
MAX_LIST_BODY = 4096
MAX_TEXT_BODY = 4096
MAX_FOOTER_TEXT = 60
MAX_REPLY_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_LIST_BUTTON = 20
MAX_ROWS = 10
MAX_SECTION_TITLE = 24
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_ROW_ID = 200
ELLIPSIS = "…"


def shorten(label: str, limit: int) -> str:
    """``label`` trimmed of surrounding spaces, cut to ``limit`` characters with "…" if longer."""
    label = label.strip()
    if len(label) <= limit:
        return label
    return label[: limit - 1].rstrip() + ELLIPSIS


def text_message(body: str) -> dict[str, Any]:
    """A free-form text message (only inside the 24-hour customer service window)."""
    _check_length("text body", body, MAX_TEXT_BODY)
    return {"type": "text", "text": {"body": body, "preview_url": False}}


def reply_buttons(body: str, buttons: Sequence[tuple[str, str]], *, footer: str | None = None) -> dict[str, Any]:
    """An interactive reply-buttons message; ``buttons`` are (id, title) pairs, 1 to 3 of them."""
    _check_length("body", body, MAX_BUTTON_BODY)
    if not 1 <= len(buttons) <= MAX_REPLY_BUTTONS:
        raise ValueError(f"a reply-buttons message has 1 to {MAX_REPLY_BUTTONS} buttons, not {len(buttons)}")
    ids = _check_ids([button_id for button_id, _ in buttons], MAX_BUTTON_ID, "button id")
    titles = _labels([title for _, title in buttons], MAX_BUTTON_TITLE, "button title")
    interactive: dict[str, Any] = {
        "type": "button",
        "body": {"text": body},
        "action": {"buttons": [{"type": "reply", "reply": {"id": button_id, "title": title}}
                               for button_id, title in zip(ids, titles, strict=True)]},
    }
    if footer is not None:
        _check_length("footer", footer, MAX_FOOTER_TEXT)
        interactive["footer"] = {"text": footer}
    return {"type": "interactive", "interactive": interactive}


def list_message(body: str, button: str, rows: Sequence[tuple[str, str, str | None]], *,
                 section_title: str | None = None) -> dict[str, Any]:
    """An interactive list message with one section; ``rows`` are (id, title, description or None)."""
    _check_length("body", body, MAX_LIST_BODY)
    if not 1 <= len(rows) <= MAX_ROWS:
        raise ValueError(f"a list message has 1 to {MAX_ROWS} rows, not {len(rows)}")
    label = _labels([button], MAX_LIST_BUTTON, "list button")[0]
    ids = _check_ids([row_id for row_id, _, _ in rows], MAX_ROW_ID, "row id")
    titles = _labels([title for _, title, _ in rows], MAX_ROW_TITLE, "row title", unique=False)
    built: list[dict[str, str]] = []
    for row_id, title, (_, _, description) in zip(ids, titles, rows, strict=True):
        row = {"id": row_id, "title": title}
        if description is not None and description.strip():
            row["description"] = shorten(description, MAX_ROW_DESCRIPTION)
        built.append(row)
    section: dict[str, Any] = {"rows": built}
    if section_title is not None:
        section["title"] = _labels([section_title], MAX_SECTION_TITLE, "section title")[0]
    return {"type": "interactive", "interactive": {
        "type": "list",
        "body": {"text": body},
        "action": {"button": label, "sections": [section]},
    }}


def _check_length(what: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the {what} is empty")
    if len(value) > limit:
        raise ValueError(f"the {what} has {len(value)} characters; at most {limit}")


def _check_ids(ids: list[str], limit: int, what: str) -> list[str]:
    for value in ids:
        _check_length(what, value, limit)
    if len(set(ids)) != len(ids):
        raise ValueError(f"each {what} must be unique in the message")
    return ids


def _labels(labels: list[str], limit: int, what: str, *, unique: bool = True) -> list[str]:
    shortened = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"the {what} is empty")
        shortened.append(shorten(label, limit))
    if unique and len(set(shortened)) != len(shortened):
        raise ValueError(f"each {what} must be unique in the message (after shortening to {limit} characters)")
    return shortened
