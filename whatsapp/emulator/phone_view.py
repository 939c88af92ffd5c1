"""What a patient's phone shows for each message the emulator holds: pure functions, no I/O.

Rendering follows what WhatsApp shows for the Cloud API's message types:

* template messages ("Template messages" and "Message Templates" references): the approved template's
  HEADER/BODY/FOOTER text with ``{{1}}`` (or ``{{name}}`` for ``parameter_format: NAMED``) replaced by the
  send's ``header``/``body`` parameters; its BUTTONS in the template's order with their approved labels:
  a QUICK_REPLY taps back as an inbound ``button`` message (``payload`` is the send's button payload, or
  the label when the send gave none, as Meta does), a URL button opens the template's URL with its
  ``{{1}}`` replaced by the send's button parameter;
* interactive ``button`` and ``list`` messages ("Interactive reply buttons messages", "Interactive list
  messages"): header, body, footer, reply buttons (inbound ``button_reply``), the list's menu label and its
  rows (inbound ``list_reply``); ``cta_url`` shows its link;
* text with WhatsApp's formatting ("Formatting" in the WhatsApp help centre): ``*bold*``, ``_italic_``,
  ``~strikethrough~`` and ``` ```monospace``` ```.

Delivery ticks come from the statuses the emulator sent by webhook (``sent`` ✓, ``delivered`` ✓✓,
``read`` blue ✓✓, ``failed`` !); statuses may arrive out of order, so the furthest one wins.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from whatsapp.catalogue import Template

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_URL = re.compile(r"https?://[^\s<>\"']+")
_STYLES = (("```", "code"), ("*", "strong"), ("_", "em"), ("~", "s"))
_TICK_RANK = {"accepted": 0, "sent": 1, "delivered": 2, "read": 3}
_MEDIA = {"image": "Photo", "video": "Video", "document": "Document", "location": "Location", "audio": "Audio"}

TemplateLookup = Callable[[str, str], "Template | None"]


class TapError(ValueError):
    """The tapped choice does not exist on that message (a stale page or a forged form)."""


@dataclass(frozen=True)
class Button:
    """One button under a bubble: ``reply`` taps back (``key`` names it), ``link`` opens ``url``, ``label`` is
    shown but does nothing here (call and copy-code buttons)."""

    kind: str
    label: str
    key: str = ""
    url: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Bubble:
    """A message as the phone shows it. ``mine``: the patient sent it (right, green)."""

    message_id: str
    mine: bool
    timestamp: int
    body: str
    header: str | None = None
    footer: str | None = None
    buttons: tuple[Button, ...] = ()
    list_label: str | None = None  # a list message: the menu button's label; its rows are in ``buttons``
    ticks: str = ""  # accepted, sent, delivered, read, failed; "" for none
    error: str | None = None
    note: str | None = None  # what the phone cannot show (media, an unknown template)


def mask_number(wa_id: str) -> str:
    """``+••••••••••12``: the page shows only the last two digits, even of a synthetic number."""
    digits = "".join(ch for ch in wa_id if ch.isdigit())
    return "+" + "•" * max(0, len(digits) - 2) + digits[-2:]


def clock_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M")


def iso_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_text(text: str) -> Markup:
    """Escaped text with WhatsApp's bold/italic/strikethrough/monospace and links made clickable."""
    out: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        out.append(_styled(text[position:match.start()]))
        url = html.escape(match.group(0))
        out.append(f'<a href="{url}" rel="noopener noreferrer" target="_blank">{url}</a>')
        position = match.end()
    out.append(_styled(text[position:]))
    return Markup("".join(out))  # noqa: S704 - every piece was escaped above (html.escape)


def _styled(text: str) -> str:
    escaped = html.escape(text, quote=False)
    for marker, tag in _STYLES:
        m = re.escape(marker)
        # A marker opens after a non-word character and closes before one, around non-blank text.
        pattern = re.compile(rf"(?<![\w{m}]){m}(?=\S)(.+?)(?<=\S){m}(?![\w{m}])", re.DOTALL)
        escaped = pattern.sub(rf"<{tag}>\1</{tag}>", escaped)
    return escaped


def ticks_for(statuses: list[str]) -> str:
    if "failed" in statuses:
        return "failed"
    return max(statuses, key=lambda s: _TICK_RANK.get(s, -1), default="accepted")


def _web(url: Any) -> str | None:
    """Only http(s) links become clickable (a registered template could hold ``javascript:``)."""
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def _param_value(param: Any) -> str:
    if not isinstance(param, dict):
        return ""
    kind = param.get("type", "text")
    if kind == "text":
        return str(param.get("text", ""))
    if kind in ("currency", "date_time"):
        return str((param.get(kind) or {}).get("fallback_value", ""))
    return f"[{kind}]"


def fill(text: str, params: list[Any], named: bool) -> str:
    """``text`` with ``{{1}}``… (or ``{{name}}``) replaced by the send's parameters."""
    if named:
        values = {str(p.get("parameter_name")): _param_value(p) for p in params if isinstance(p, dict)}
    else:
        values = {str(i): _param_value(p) for i, p in enumerate(params, start=1)}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _components(template: Template) -> dict[str, dict[str, Any]]:
    return {str(c.get("type", "")).upper(): c for c in template.raw.get("components", []) if isinstance(c, dict)}


def _sent_parts(payload: dict[str, Any]) -> tuple[list[Any], list[Any], dict[int, dict[str, Any]]]:
    header: list[Any] = []
    body: list[Any] = []
    buttons: dict[int, dict[str, Any]] = {}
    for component in (payload.get("template") or {}).get("components") or []:
        kind = str(component.get("type", "")).lower()
        if kind == "header":
            header = list(component.get("parameters") or [])
        elif kind == "body":
            body = list(component.get("parameters") or [])
        elif kind == "button":
            buttons[int(str(component.get("index", -1)))] = component
    return header, body, buttons


def _template_bubble(payload: dict[str, Any], template: Template | None) -> dict[str, Any]:
    raw = payload.get("template") or {}
    if template is None:
        return {"body": "", "note": f"Template {raw.get('name')} ({(raw.get('language') or {}).get('code')}) is "
                                    "not in the emulator's registry"}
    header_params, body_params, sent_buttons = _sent_parts(payload)
    named = template.parameter_format == "NAMED"
    parts = _components(template)
    header_component = parts.get("HEADER") or {}
    header, note = None, None
    if header_component.get("format", "TEXT") == "TEXT" and header_component.get("text"):
        header = fill(str(header_component["text"]), header_params, named)
    elif header_component:
        note = _MEDIA.get(str(header_component.get("format", "")).lower(), "Media") + " header"
    footer = (parts.get("FOOTER") or {}).get("text")
    buttons = []
    for shape in template.buttons:
        sent = sent_buttons.get(shape.index, {})
        params = sent.get("parameters") or [{}]
        if shape.type == "QUICK_REPLY":
            buttons.append(Button("reply", shape.text, key=str(shape.index)))
        elif shape.type == "URL" and shape.url:
            value = _param_value(params[0])
            url = _PLACEHOLDER.sub(lambda _: value, shape.url)  # noqa: B023 - used at once, inside the loop
            buttons.append(Button("link", shape.text, url=_web(url)))
        else:
            buttons.append(Button("label", shape.text))
    return {"header": header, "body": fill(template.body_text, body_params, named),
            "footer": str(footer) if footer else None, "buttons": tuple(buttons), "note": note}


def _interactive_bubble(interactive: dict[str, Any]) -> dict[str, Any]:
    header = interactive.get("header") or {}
    action = interactive.get("action") or {}
    kind = interactive.get("type")
    result: dict[str, Any] = {
        "header": header.get("text") if header.get("type") == "text" else None,
        "note": _MEDIA.get(str(header.get("type")), "Media") + " header" if header.get("type") not in (None, "text")
        else None,
        "body": str((interactive.get("body") or {}).get("text", "")),
        "footer": (interactive.get("footer") or {}).get("text"),
    }
    if kind == "button":
        result["buttons"] = tuple(Button("reply", str(b["reply"]["title"]), key=str(i))
                                  for i, b in enumerate(action.get("buttons") or []))
    elif kind == "list":
        rows = [row for section in action.get("sections") or [] for row in section.get("rows") or []]
        result["list_label"] = str(action.get("button", ""))
        result["buttons"] = tuple(Button("reply", str(row["title"]), key=str(i), description=row.get("description"))
                                  for i, row in enumerate(rows))
    elif kind == "cta_url":
        params = action.get("parameters") or {}
        result["buttons"] = (Button("link", str(params.get("display_text", "Open")), url=_web(params.get("url"))),)
    else:
        result["note"] = f"Interactive {kind} message"
    return result


def outbound_bubble(message: dict[str, Any], lookup: TemplateLookup) -> Bubble:
    """A message the business sent (``AcceptedMessage.to_json()``), as the patient's phone shows it."""
    payload = message.get("payload") or {}
    kind = message.get("type") or payload.get("type", "text")
    parts: dict[str, Any]
    if kind == "template":
        raw = payload.get("template") or {}
        parts = _template_bubble(payload, lookup(str(raw.get("name")), str((raw.get("language") or {}).get("code"))))
    elif kind == "interactive":
        parts = _interactive_bubble(payload.get("interactive") or {})
    elif kind == "text":
        parts = {"body": str((payload.get("text") or {}).get("body", ""))}
    else:
        media = payload.get(kind) or {}
        parts = {"body": str(media.get("caption", "")), "note": _MEDIA.get(str(kind), str(kind).capitalize())}
    errors = message.get("errors") or []
    error = str(errors[0].get("title") or errors[0].get("code")) if errors else None
    return Bubble(message_id=message["id"], mine=False, timestamp=int(message.get("accepted_at", 0)),
                  ticks=ticks_for(list(message.get("statuses") or [])), error=error, **parts)


def inbound_bubble(item: dict[str, Any], delivered: bool) -> Bubble:
    """A message the patient sent (a ``messages[]`` item of the inbound webhook); ticks: did the service
    take the webhook (✓✓) or not (!)."""
    kind = item.get("type")
    if kind == "button":
        body = str((item.get("button") or {}).get("text", ""))
    elif kind == "interactive":
        interactive = item.get("interactive") or {}
        reply = interactive.get("button_reply") or interactive.get("list_reply") or {}
        body = str(reply.get("title", ""))
    elif kind == "system":
        body = str((item.get("system") or {}).get("body", ""))
    else:
        body = str((item.get("text") or {}).get("body", ""))
    return Bubble(message_id=str(item.get("id", "")), mine=True, timestamp=int(item.get("timestamp", 0)),
                  body=body, ticks="delivered" if delivered else "failed",
                  error=None if delivered else "Not delivered to the service's webhook")


def tap_inbound(message: dict[str, Any], key: str, lookup: TemplateLookup) -> dict[str, Any]:
    """The ``POST /_emulator/inbound`` body (without ``from``) for tapping choice ``key`` of ``message``.

    Raises :class:`TapError` when the message has no such reply choice."""
    payload = message.get("payload") or {}
    if not key.isdigit():
        raise TapError("unknown choice")
    index = int(key)
    if payload.get("type") == "template":
        raw = payload.get("template") or {}
        template = lookup(str(raw.get("name")), str((raw.get("language") or {}).get("code")))
        shape = template.buttons[index] if template is not None and index < len(template.buttons) else None
        if shape is None or shape.type != "QUICK_REPLY":
            raise TapError("that button is not a quick reply")
        sent = _sent_parts(payload)[2].get(index, {})
        given = (sent.get("parameters") or [{}])[0]
        return {"button": {"payload": str(given.get("payload") or shape.text), "text": shape.text},
                "context": message["id"]}
    interactive = payload.get("interactive") or {}
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        choices = action.get("buttons") or []
        if index >= len(choices):
            raise TapError("no such reply button")
        reply = choices[index]["reply"]
        return {"button_reply": {"id": reply["id"], "title": reply["title"]}, "context": message["id"]}
    if interactive.get("type") == "list":
        rows = [row for section in action.get("sections") or [] for row in section.get("rows") or []]
        if index >= len(rows):
            raise TapError("no such list row")
        chosen = {k: rows[index][k] for k in ("id", "title", "description") if rows[index].get(k) is not None}
        return {"list_reply": chosen, "context": message["id"]}
    raise TapError("this message has no reply choices")
