"""`bridge sending resume` sends every message the pause held on the next dispatcher tick, over real HTTP:
the WhatsApp emulator refuses a send with an account-level error (131031, account locked), which pauses
sending; the admin resumes with the CLI. The dispatcher is driven tick by tick (no pipeline loop), so
"at once" is counted in ticks, not seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from adapter.cli.main import app as cli
from adapter.outbox import dispatch
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.dispatch import Dispatcher, RetryPolicy
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.service import Service, build_service, make_sender
from adapter.settings import load_settings
from adapter.storage.db import transaction, upgrade, utcnow
from tests.support.e2e import emulator_for
from whatsapp.emulator import EmulatorServer

TEMPLATE = {"name": "service_update", "language": {"code": "en_US"}}


@dataclass
class Stack:
    service: Service
    emulator: EmulatorServer
    dispatcher: Dispatcher


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    monkeypatch.setenv("BRIDGE_MODE", "demo")  # what the admin's `bridge` command reads
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    # Each tick reads the pause flag (a service caches it for a second): ticks, not seconds, are counted.
    monkeypatch.setattr(dispatch, "FLAG_CACHE_SECONDS", 0.0)
    emulator, settings = emulator_for(load_settings(mode="demo", database_url=url, manage_subscriptions=False))
    service = build_service(settings)
    upgrade(service.engine)
    # One send at a time, in claim order; a transient error waits at least 300 s (far beyond this test).
    sender = make_sender(settings)
    dispatcher = Dispatcher(service.outbox, sender, RetryPolicy(8, 600.0, 900.0), batch_size=10, concurrency=1)
    try:
        yield Stack(service, emulator, dispatcher)
    finally:
        await sender.aclose()
        emulator.stop()
        service.engine.dispose()


def enqueue(stack: Stack, n: int) -> str:
    """A due message to patient ``n`` at +1 201-555-01nn; returns its key."""
    key, ref = f"held-{n}", f"Patient/held-{n}"
    with transaction(stack.service.engine) as session:
        set_consent(session, ref, OPTED_IN, "admin")
        stack.service.outbox.enqueue(session, natural_key=key, rule_id="test", resource_ref="Appointment/held",
                                     patient_ref=ref, recipient=f"+120155501{n:02d}", template=TEMPLATE,
                                     due_at=utcnow())
    return key


def fault(stack: Stack, **response: Any) -> None:
    httpx.post(f"{stack.emulator.base_url}/_emulator/faults", json={"responses": [response]},
               timeout=5).raise_for_status()


def accepted(stack: Stack) -> list[str]:
    """The numbers' last two digits the emulator accepted a message for."""
    found = httpx.get(f"{stack.emulator.base_url}/_emulator/messages", timeout=5).json()["messages"]
    return sorted(str(m["payload"]["to"])[-2:] for m in found)


def row(stack: Stack, key: str) -> OutboxMessage:
    with Session(stack.service.engine) as session:
        return session.exec(select(OutboxMessage).where(col(OutboxMessage.natural_key) == key)).one()


def due(stack: Stack, key: str) -> datetime:
    moment = row(stack, key).due_at
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def test_every_message_the_pause_held_goes_on_the_first_tick_after_resume(stack: Stack) -> None:
    fault(stack, http_status=500, code=131000)  # transient: a backoff of its own, which the resume leaves alone
    backoff = enqueue(stack, 11)
    assert await stack.dispatcher.run_once() == 1
    backoff_due = due(stack, backoff)
    fault(stack, http_status=403, code=131031)  # account locked: every further send would fail
    refused, unsent = enqueue(stack, 12), enqueue(stack, 13)
    assert await stack.dispatcher.run_once() == 2  # the first is refused; the second is then not sent
    assert sending_paused(stack.service.engine) is not None
    waiting = enqueue(stack, 14)  # comes due during the pause
    assert await stack.dispatcher.run_once() == 0  # nothing is claimed while paused
    assert (row(stack, refused).last_error_class, row(stack, unsent).last_error_class) == (
        "AccountBlockedError", "SendingPaused")
    assert accepted(stack) == []

    result = CliRunner().invoke(cli, ["sending", "resume"])
    assert result.exit_code == 0 and result.output.strip() == "sending resumed"

    assert await stack.dispatcher.run_once() == 3  # one tick: the refused, the unsent and the waiting one
    assert accepted(stack) == ["12", "13", "14"]
    assert {row(stack, key).state for key in (refused, unsent, waiting)} == {"sent"}
    assert row(stack, backoff).state == "queued" and due(stack, backoff) == backoff_due
