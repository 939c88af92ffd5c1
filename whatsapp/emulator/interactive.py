"""Checks of ``type: interactive`` sends, with the Cloud API's limits.

Sources: Meta's "Interactive reply buttons messages" and "Interactive list messages" pages (Messages API),
the request examples of ``POST /{Version}/{Phone-Number-ID}/messages`` in facebook/openapi
(``business-messaging-api_v23.0.yaml``: "Send Reply Button", "Send List Message"), and the object reference
of Meta's WhatsApp Node.js SDK (ButtonObject, RowObject, InteractiveObject):

* reply buttons: 1 to 3 ``{"type": "reply", "reply": {"id", "title"}}``; title 1-20 characters and unique
  in the message; id 1-256 characters and unique; body text at most 1,024 characters.
* list: ``action.button`` label 1-20 characters; 1 to 10 sections with 10 rows in total; a section title
  (at most 24 characters) is required when there is more than one section; row title 1-24, description
  at most 72, id 1-200 characters and unique; body text at most 4,096 characters; a header, if any, is text.
* header text and footer text: at most 60 characters.

A missing required value answers **131008** "Required parameter is missing"; a value out of its limits
**131009** "Parameter value is not valid", with Meta's "… length invalid. Min length: 1, Max length: N"
wording in ``error_data.details``; a wrong shape **100**.
"""

from __future__ import annotations

from typing import Any

from whatsapp.emulator.graph_errors import GraphError

MAX_BUTTON_BODY = 1024
MAX_LIST_BODY = 4096
MAX_HEADER_TEXT = 60
MAX_FOOTER_TEXT = 60
MAX_REPLY_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_LIST_BUTTON = 20
MAX_SECTIONS = 10
MAX_ROWS = 10
MAX_SECTION_TITLE = 24
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_ROW_ID = 200
OTHER_TYPES = frozenset({"cta_url", "flow", "product", "product_list", "catalog_message",
                         "location_request_message", "address_message", "voice_call"})
_BODY_OPTIONAL = frozenset({"product", "catalog_message"})


def check_interactive(interactive: Any) -> None:
    """Raises :class:`GraphError` with Meta's code if ``interactive`` would be refused."""
    if not isinstance(interactive, dict):
        raise GraphError(100, "The parameter interactive is required.")
    kind = interactive.get("type")
    if kind not in ("button", "list") and kind not in OTHER_TYPES:
        raise GraphError(100, "Param interactive['type'] is not valid")
    body = interactive.get("body")
    if body is not None or kind not in _BODY_OPTIONAL:
        body_text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(body_text, str) or not body_text:
            raise GraphError(131008, "The parameter interactive['body']['text'] is required.")
        _length("Body text", body_text, MAX_LIST_BODY if kind == "list" else MAX_BUTTON_BODY)
    _check_header(interactive.get("header"), text_only=kind == "list")
    footer = interactive.get("footer")
    if footer is not None:
        footer_text = footer.get("text") if isinstance(footer, dict) else None
        if not isinstance(footer_text, str):
            raise GraphError(131008, "The parameter interactive['footer']['text'] is required.")
        _length("Footer text", footer_text, MAX_FOOTER_TEXT)
    action = interactive.get("action")
    if kind == "button":
        _check_buttons(action)
    elif kind == "list":
        _check_list(action)


def _length(what: str, value: str, maximum: int) -> None:
    if not 1 <= len(value) <= maximum:
        raise GraphError(131009, f"{what} length invalid. Min length: 1, Max length: {maximum}")


def _required_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise GraphError(131008, f"The parameter {where}['{key}'] is required.")
    return value


def _check_header(header: Any, *, text_only: bool) -> None:
    if header is None:
        return
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise GraphError(131008, "The parameter interactive['header']['type'] is required.")
    kind = header["type"]
    if kind == "text":
        _length("Header text", _required_str(header, "text", "interactive['header']"), MAX_HEADER_TEXT)
    elif text_only:
        raise GraphError(131009, "Header type invalid. A list message header must be of type text")
    elif kind not in ("image", "video", "document"):
        raise GraphError(100, "Param interactive['header']['type'] must be one of {TEXT, IMAGE, VIDEO, DOCUMENT}")


def _check_buttons(action: Any) -> None:
    buttons = action.get("buttons") if isinstance(action, dict) else None
    if not isinstance(buttons, list):
        raise GraphError(131008, "The parameter interactive['action']['buttons'] is required.")
    if not 1 <= len(buttons) <= MAX_REPLY_BUTTONS:
        raise GraphError(131009, f"Buttons count invalid. Min: 1, Max: {MAX_REPLY_BUTTONS}")
    titles: set[str] = set()
    ids: set[str] = set()
    for button in buttons:
        if not isinstance(button, dict) or button.get("type", "reply") != "reply":
            raise GraphError(131009, "Button type invalid. The only supported button type is reply")
        reply = button.get("reply")
        if not isinstance(reply, dict):
            raise GraphError(131008, "The parameter interactive['action']['buttons'][]['reply'] is required.")
        where = "interactive['action']['buttons'][]['reply']"
        button_id, title = _required_str(reply, "id", where), _required_str(reply, "title", where)
        _length("Button title", title, MAX_BUTTON_TITLE)
        _length("Button id", button_id, MAX_BUTTON_ID)
        if title in titles:
            raise GraphError(131009, "Button title must be unique within the message")
        if button_id in ids:
            raise GraphError(131009, "Button id must be unique within the message")
        titles.add(title)
        ids.add(button_id)


def _check_list(action: Any) -> None:
    if not isinstance(action, dict):
        raise GraphError(131008, "The parameter interactive['action'] is required.")
    _length("Button text", _required_str(action, "button", "interactive['action']"), MAX_LIST_BUTTON)
    sections = action.get("sections")
    if not isinstance(sections, list):
        raise GraphError(131008, "The parameter interactive['action']['sections'] is required.")
    if not 1 <= len(sections) <= MAX_SECTIONS:
        raise GraphError(131009, f"Sections count invalid. Min: 1, Max: {MAX_SECTIONS}")
    row_ids: set[str] = set()
    for section in sections:
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list) or not section["rows"]:
            raise GraphError(131008, "The parameter interactive['action']['sections'][]['rows'] is required.")
        rows: list[Any] = section["rows"]
        title = section.get("title")
        if title is None and len(sections) > 1:
            raise GraphError(131008, "The parameter interactive['action']['sections'][]['title'] is required "
                                     "when there is more than one section.")
        if title is not None:
            if not isinstance(title, str):
                raise GraphError(100, "Param interactive['action']['sections'][]['title'] must be a string")
            _length("Section title", title, MAX_SECTION_TITLE)
        for row in rows:
            if not isinstance(row, dict):
                raise GraphError(100, "Param interactive['action']['sections'][]['rows'][] must be an object")
            where = "interactive['action']['sections'][]['rows'][]"
            row_id, row_title = _required_str(row, "id", where), _required_str(row, "title", where)
            _length("Row title", row_title, MAX_ROW_TITLE)
            _length("Row id", row_id, MAX_ROW_ID)
            description = row.get("description")
            if description is not None:
                if not isinstance(description, str):
                    raise GraphError(100, f"Param {where}['description'] must be a string")
                if len(description) > MAX_ROW_DESCRIPTION:
                    raise GraphError(131009, f"Row description length invalid. Min length: 0, Max length: "
                                             f"{MAX_ROW_DESCRIPTION}")
            if row_id in row_ids:
                raise GraphError(131009, "Row id must be unique within the message")
            row_ids.add(row_id)
    if len(row_ids) > MAX_ROWS:
        raise GraphError(131009, f"Total row count exceed max allowed count: {MAX_ROWS}")
