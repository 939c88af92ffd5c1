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

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} webhooks, got {len(self.received)}")
            await asyncio.sleep(0.01)
        return self.received
