"""Shared values and helpers for the WhatsApp tests (synthetic numbers only: +1 201-555-01xx)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

TOKEN = "test-token-not-a-secret"
APP_SECRET = "test-app-secret"
PHONE_NUMBER_ID = "100000000000001"
PATIENT = "+1 201-555-0123"
PATIENT_DIGITS = "12015550123"
VERSION = "v23.0"


def template_payload(**overrides: Any) -> dict[str, Any]:
    """A valid appointment_confirmation send, with PHI-free parameters."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "to": PATIENT,
        "type": "template",
        "template": {
            "name": "appointment_confirmation",
            "language": {"code": "en_US"},
            "components": [
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Tuesday, December 1, 2026"},
                    {"type": "text", "text": "10:30 AM"},
                    {"type": "text", "text": "Main Campus"},
                ]},
                {"type": "button", "sub_type": "quick_reply", "index": "0",
                 "parameters": [{"type": "payload", "payload": "confirm:ob-1"}]},
            ],
        },
    }
    payload.update(overrides)
    return payload


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def call(method: str, url: str, body: Any = None) -> Any:
    """Calls an operator endpoint without blocking the event loop (a receiver may share it)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as response:
        return await response.json()


@dataclass
class Receiver:
    """A real HTTP server that records webhook POSTs (raw bytes and headers)."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses_to_return: list[int] = field(default_factory=list)  # then 200
    delays_to_apply: list[float] = field(default_factory=list)  # seconds to wait before answering, then none

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} webhooks, got {len(self.received)}")
            await asyncio.sleep(0.01)
        return self.received

    def documents(self) -> list[dict[str, Any]]:
        """Every received body, parsed (the raw bytes stay in ``received``)."""
        return [json.loads(body) for _, body in self.received]

    def statuses(self) -> list[dict[str, Any]]:
        """Every ``statuses[]`` item received, in arrival order."""
        return [item for doc in self.documents() for entry in doc.get("entry", [])
                for change in entry.get("changes", []) for item in change.get("value", {}).get("statuses", [])]

    def messages(self) -> list[dict[str, Any]]:
        """Every ``messages[]`` item received (inbound), in arrival order."""
        return [item for doc in self.documents() for entry in doc.get("entry", [])
                for change in entry.get("changes", []) for item in change.get("value", {}).get("messages", [])]

    async def until(self, done: Any, timeout: float = 10.0) -> None:
        """Waits until ``done(self)`` is true."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(self):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met; received {len(self.received)} webhooks")
            await asyncio.sleep(0.01)


WABA_ID = "200000000000002"
OTHER_PATIENT = "+1 201-555-0124"
OTHER_DIGITS = "12015550124"


def text_payload(body: str = "Hello", to: str = PATIENT, preview_url: Any = None, **overrides: Any) -> dict[str, Any]:
    text: dict[str, Any] = {"body": body} if preview_url is None else {"body": body, "preview_url": preview_url}
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": text, **overrides}


def buttons_payload(*titles: str, body: str = "How can we help?", to: str = PATIENT) -> dict[str, Any]:
    buttons = [{"type": "reply", "reply": {"id": f"b{i}", "title": title}} for i, title in enumerate(titles)]
    return {"messaging_product": "whatsapp", "to": to, "type": "interactive",
            "interactive": {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}}}


def list_payload(sections: list[dict[str, Any]], *, button: str = "Choose", body: str = "Pick a team",
                 to: str = PATIENT) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "interactive",
            "interactive": {"type": "list", "body": {"text": body},
                            "action": {"button": button, "sections": sections}}}


async def request(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """Any call, answering (HTTP status, parsed JSON body or None)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, \
            session.request(method, url, json=body, headers=headers) as response:
        raw = await response.read()
        return response.status, json.loads(raw) if raw else None


async def send_raw(base_url: str, payload: Any, *, token: str = TOKEN,
                   phone_number_id: str = PHONE_NUMBER_ID) -> tuple[int, Any]:
    """``POST /{version}/{phone_number_id}/messages`` without the sender: the raw status and body."""
    return await request("POST", f"{base_url}/{VERSION}/{phone_number_id}/messages", payload, token=token)
