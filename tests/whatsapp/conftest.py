"""Fixtures for the WhatsApp tests: the emulator on loopback and a real webhook receiver.

All phone numbers are synthetic (+1 201-555-01xx).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from wa_helpers import APP_SECRET, TOKEN, Receiver

from whatsapp.emulator import EmulatorConfig, EmulatorServer, StatusDelays, WebhookRetryPolicy


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if state.delays_to_apply:
            await asyncio.sleep(state.delays_to_apply.pop(0))
        state.received.append((dict(request.headers), body))
        status = state.statuses_to_return.pop(0) if state.statuses_to_return else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/webhooks/whatsapp", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    yield state
    await runner.cleanup()


def make_config(**overrides: Any) -> EmulatorConfig:
    values: dict[str, Any] = {
        "access_token": TOKEN,
        "app_secret": APP_SECRET,
        "status_delays": StatusDelays(sent=0.01, delivered=0.01, read=0.01),
        "webhook_retry": WebhookRetryPolicy(max_attempts=3, initial_backoff_seconds=0.02),
    }
    values.update(overrides)
    return EmulatorConfig(**values)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    servers: list[EmulatorServer] = []

    def start(**overrides: Any) -> EmulatorServer:
        server = EmulatorServer(make_config(**overrides))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """An emulator without a webhook URL."""
    return start_emulator()
