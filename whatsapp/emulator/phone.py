"""The patient's phone: a page of the emulator showing each synthetic patient's chat as WhatsApp renders it.

A test and demo tool, served only by the emulator (never by the service). Routes, all under
``/_emulator/phone``:

=========================================  ===========================================================
``GET  /_emulator/phone``                  the chats, one per number the business wrote to or heard from
``GET  /_emulator/phone/chats/{key}``      one chat: bubbles, ticks, buttons, a reply box
``GET  /_emulator/phone/list.json``        ``{"version", "html"}`` of the chat list, for polling
``GET  /_emulator/phone/chats/{key}/log``  ``{"version", "html"}`` of the chat's bubbles, for polling
``POST /_emulator/phone/chats/{key}/reply``  form ``text``: the patient writes
``POST /_emulator/phone/chats/{key}/tap``    form ``message_id``, ``choice``: the patient taps a button or row
``GET  /_emulator/phone/static/…``         the page's stylesheet and script (no CDN: hospitals run air-gapped)
=========================================  ===========================================================

A reply or a tap becomes an inbound message exactly as ``POST /_emulator/inbound`` makes one
(:func:`whatsapp.emulator.inbound.build_inbound`, the 24-hour window opened, then the signed ``messages``
webhook through :meth:`WebhookDispatcher.deliver`). A chat's ``key`` is an HMAC of the number under a key
made at start-up, so no phone number appears in a URL; the page shows numbers masked but for the last two
digits. Forms carry a per-start CSRF token; pages are sent with a strict Content-Security-Policy (no
inline script or style). The script only enhances: without it, forms post and redirect and pages reload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles

from whatsapp.catalogue import Template
from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.inbound import build_inbound
from whatsapp.emulator.payloads import envelope
from whatsapp.emulator.phone_view import (
    Bubble,
    TapError,
    clock_time,
    format_text,
    inbound_bubble,
    iso_time,
    mask_number,
    outbound_bubble,
    tap_inbound,
)
from whatsapp.emulator.state import EmulatorState
from whatsapp.emulator.templates import TemplateRegistry
from whatsapp.emulator.webhooks import WebhookDispatcher

PREFIX = "/_emulator/phone"
_HERE = Path(__file__).parent
_MAX_FORM = 64 * 1024
_MAX_TEXT = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Chat:
    """One patient's phone in the list of chats."""

    key: str
    wa_id: str
    bubbles: list[Bubble] = field(default_factory=list)

    @property
    def masked(self) -> str:
        return mask_number(self.wa_id)

    @property
    def last(self) -> Bubble | None:
        return self.bubbles[-1] if self.bubbles else None


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(whatsapp=format_text, clock=clock_time, iso=iso_time)
    return env


class _Phones:
    """Reads the emulator's state into chats; turns the patient's taps and words into inbound webhooks."""

    def __init__(self, config: EmulatorConfig, state: EmulatorState, dispatcher: WebhookDispatcher,
                 registry: TemplateRegistry) -> None:
        self.config, self.state, self.dispatcher, self.registry = config, state, dispatcher, registry
        self._key = os.urandom(32)  # per start: chat keys and the CSRF token cannot be guessed or reused
        self.csrf = hmac.new(self._key, b"csrf", hashlib.sha256).hexdigest()

    def chat_key(self, wa_id: str) -> str:
        return hmac.new(self._key, wa_id.encode(), hashlib.sha256).hexdigest()[:20]

    def template(self, name: str, language: str) -> Template | None:
        record = self.registry.record(name, language)
        return record.template if record is not None else None

    def chats(self) -> dict[str, Chat]:
        """Chats by key, each with its bubbles oldest first; the chat written in last comes first."""
        found: dict[str, list[tuple[float, Bubble]]] = {}
        for message in list(self.state.messages.values()):
            found.setdefault(message.wa_id, []).append(
                (message.accepted_at, outbound_bubble(message.to_json(), self.template)))
        for record in list(self.state.webhooks):
            if record["kind"] != "message" or record["duplicate_of"] is not None:
                continue
            value = json.loads(record["body"])["entry"][0]["changes"][0]["value"]
            for item in value.get("messages", []):
                if item.get("from"):  # a sender without a number (BSUID only) has no phone here
                    found.setdefault(item["from"], []).append(
                        (record["created_at"], inbound_bubble(item, record["delivered"])))
        ordered = sorted(found.items(), key=lambda entry: -max(at for at, _ in entry[1]))
        return {self.chat_key(wa_id): Chat(self.chat_key(wa_id), wa_id, [b for _, b in sorted(
            bubbles, key=lambda pair: pair[0])]) for wa_id, bubbles in ordered}

    def reply_number_id(self, wa_id: str) -> str:
        """The business number the patient last heard from (the chat they answer in)."""
        latest = [m for m in self.state.messages.values() if m.wa_id == wa_id]
        return latest[-1].phone_number_id if latest else next(iter(self.config.phone_numbers))

    async def deliver(self, wa_id: str, content: dict[str, Any]) -> bool:
        """What ``POST /_emulator/inbound`` does with ``{"from": wa_id, **content}``; True if the service took it."""
        raw = {"from": wa_id, "phone_number_id": self.reply_number_id(wa_id), **content}
        message = build_inbound(raw, self.config, self.state.next_wamid(), self.state.clock.now(),
                                self.state.tunables.bsuid_enabled)
        for key in (message.wa_id, message.user_id):
            if key and message.opens_window:
                self.state.open_window(key, message.timestamp)
        document = envelope(self.config, message.phone_number_id, message.value)
        record = await self.dispatcher.deliver(document, kind="message", label=message.type,
                                               message_id=message.message_id)
        return bool(record["delivered"])


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _fragment(html: str) -> JSONResponse:
    version = hashlib.sha256(html.encode()).hexdigest()[:16]
    return JSONResponse({"version": version, "html": html}, headers=SECURITY_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def add_phone_routes(app: FastAPI, config: EmulatorConfig, state: EmulatorState, dispatcher: WebhookDispatcher,
                     registry: TemplateRegistry) -> None:
    phones = _Phones(config, state, dispatcher, registry)
    env = _environment()
    business = ", ".join(config.phone_numbers.values())

    def render(name: str, **values: Any) -> str:
        return env.get_template(name).render(prefix=PREFIX, csrf=phones.csrf, business=business, **values)

    def not_found() -> HTMLResponse:
        return _page(render("phone_missing.html"), status=404)

    def answer(request: Request, key: str, outcome: str | None, status: int = 200) -> Response:
        """JSON for the page's script; for a plain form post, back to the chat (or a short error page)."""
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": status == 200, "outcome": outcome}, status_code=status,
                                headers=SECURITY_HEADERS)
        if status != 200:
            return _page(render("phone_missing.html", problem=outcome), status=status)
        return RedirectResponse(f"{PREFIX}/chats/{key}", status_code=303, headers=SECURITY_HEADERS)

    @app.get(PREFIX, include_in_schema=False)
    async def chat_list() -> HTMLResponse:
        return _page(render("phone_chats.html", chats=list(phones.chats().values())))

    @app.get(f"{PREFIX}/list.json", include_in_schema=False)
    async def chat_list_fragment() -> JSONResponse:
        return _fragment(render("phone_list.html", chats=list(phones.chats().values())))

    @app.get(PREFIX + "/chats/{key}", include_in_schema=False)
    async def chat_view(key: str) -> HTMLResponse:
        chat = phones.chats().get(key)
        return _page(render("phone_chat.html", chat=chat)) if chat is not None else not_found()

    @app.get(PREFIX + "/chats/{key}/log", include_in_schema=False)
    async def chat_log(key: str) -> Response:
        chat = phones.chats().get(key)
        return _fragment(render("phone_log.html", chat=chat)) if chat is not None else not_found()

    async def checked(request: Request, key: str) -> tuple[Chat | None, dict[str, str]]:
        form = await _form(request)
        if not hmac.compare_digest(form.get("csrf", ""), phones.csrf):
            return None, form
        return phones.chats().get(key), form

    @app.post(PREFIX + "/chats/{key}/reply", include_in_schema=False)
    async def reply(request: Request, key: str) -> Response:
        chat, form = await checked(request, key)
        if chat is None:
            return answer(request, key, "unknown chat or expired form: reload the page", 403)
        text = form.get("text", "").strip()
        if not text or len(text) > _MAX_TEXT:
            return answer(request, key, f"write 1 to {_MAX_TEXT} characters", 422)
        delivered = await phones.deliver(chat.wa_id, {"text": text})
        return answer(request, key, "delivered" if delivered else "not delivered")

    @app.post(PREFIX + "/chats/{key}/tap", include_in_schema=False)
    async def tap(request: Request, key: str) -> Response:
        chat, form = await checked(request, key)
        if chat is None:
            return answer(request, key, "unknown chat or expired form: reload the page", 403)
        message = state.messages.get(form.get("message_id", ""))
        if message is None or message.wa_id != chat.wa_id:
            return answer(request, key, "no such message in this chat", 422)
        try:
            content = tap_inbound(message.to_json(), form.get("choice", ""), phones.template)
        except TapError as exc:
            return answer(request, key, str(exc), 422)
        delivered = await phones.deliver(chat.wa_id, content)
        return answer(request, key, "delivered" if delivered else "not delivered")

    app.mount(f"{PREFIX}/static", StaticFiles(directory=_HERE / "static"), name="phone-static")
