"""The catch-up at start-up and the polling mode's Subscriptions, end to end over real HTTP: the real
sekmet FHIR server (which gives up a rest-hook delivery after one failed attempt and sets the
Subscription to ``error``, as EHRs do after their retries), the WhatsApp emulator (its record of
accepted messages is the ground truth) and the service, stopped and started again on the same
database and port as ``bridge serve`` would be.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.app import create_app
from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.demo.stack import DemoStack, subscriptions_ready, wait_for
from adapter.feeds.tables import FeedState, InboxEvent
from adapter.outbox.tables import OutboxMessage
from adapter.settings import Settings, load_settings
from adapter.storage.db import make_engine
from ehr.hook_secrets import authorization_header, derive_secret
from ehr.subscriptions import notify_endpoint
from tests.support.e2e import create, ehr_client, emulator_for, health, patient, sent_to
from tests.support.synthetic import synthetic_appointment
from whatsapp.emulator.server import EmulatorServer

pytestmark = pytest.mark.fhir
CONFIRMATION = "appointment-booked-confirmation"


@dataclass
class Outside:
    """What outlives the service's restarts: the EHR and the emulator."""

    ehr: SandboxEhr
    emulator: EmulatorServer
    settings: Settings  # demo defaults pointed at both (no port or database yet)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outside]:
    ehr = SandboxEhr(tmp_path_factory.mktemp("catchup-ehr") / "ehr", retries=1).start()
    emulator, settings = emulator_for(load_settings(mode="demo", fhir_base_url=ehr.base_url))
    yield Outside(ehr, emulator, settings)
    emulator.stop()
    ehr.stop()


def service_settings(outside: Outside, workdir: Path, **overrides: Any) -> Settings:
    """Default feed settings (``feed_mode=subscriptions``, reconcile on) unless overridden."""
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    return outside.settings.model_copy(update={
        "public_base_url": public, "http_port": port, "database_url": f"sqlite:///{workdir / 'bridge.db'}",
        "portal_base_url": f"{public}/portal-demo", "tick_seconds": 0.2, "audit_checkpoint_seconds": 1.0,
        **overrides})


def serve(outside: Outside, settings: Settings) -> DemoStack:
    """``bridge serve`` in a thread: the app's lifespan runs the start-up chores and the feeds."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="bridge-http", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the service")
    return DemoStack(outside.ehr, outside.emulator, server, thread, settings, app.state.service)


def halt(stack: DemoStack) -> None:
    stack.server.should_exit = True
    stack.thread.join(timeout=15)
    assert not stack.thread.is_alive()


def cursor(engine: Engine, key: str = "appointment") -> str | None:
    with Session(engine) as session:
        state = session.get(FeedState, f"poll:{key}")
        return state.watermark if state else None


def ours(stack: DemoStack) -> dict[str, str]:
    """key -> status of the Subscriptions in the EHR that notify this service."""
    prefix = notify_endpoint(stack.settings.public_base_url, "")
    with ehr_client(stack) as client:
        bundle = client.get("/Subscription", params={"_count": "200"}).json()
    subs = [entry["resource"] for entry in bundle.get("entry", [])]
    return {sub["channel"]["endpoint"][len(prefix):]: sub["status"] for sub in subs
            if sub["channel"]["endpoint"].startswith(prefix)}


def creations(stack: DemoStack) -> int:
    """How many Subscriptions notifying this service the EHR's history shows created, ever."""
    prefix = notify_endpoint(stack.settings.public_base_url, "")
    with ehr_client(stack) as client:
        history = client.get("/Subscription/_history", params={"_count": "1000"}).json()
    return sum(1 for entry in history.get("entry", []) if entry["request"]["method"] == "POST"
               and entry["resource"]["channel"]["endpoint"].startswith(prefix))


def settled(engine: Engine) -> bool:
    """Every inbox event handled and every confirmation sent."""
    with Session(engine) as session:
        pending = session.exec(select(InboxEvent.id).where(col(InboxEvent.state) != "done")).first()
        unsent = session.exec(select(OutboxMessage.id).where(col(OutboxMessage.rule_id) == CONFIRMATION,
                                                             col(OutboxMessage.state) != "sent")).first()
    return pending is None and unsent is None


def inbox_feeds(engine: Engine, appointment: dict[str, Any]) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(InboxEvent.subscription_key)
                                 .where(col(InboxEvent.resource_id) == appointment["id"])))


def test_bookings_the_ehr_gave_up_on_while_the_service_was_down_are_sent_once_after_it_starts(
    outside: Outside, tmp_path: Path
) -> None:
    settings = service_settings(outside, tmp_path)
    assert (settings.feed_mode, settings.reconcile_interval_seconds) == ("subscriptions", 300.0)  # the defaults
    engine = make_engine(settings.database_url)
    stack = serve(outside, settings)
    try:
        wait_for(lambda: subscriptions_ready(stack), 30, "the Subscriptions")
        wait_for(lambda: cursor(engine), 30, "the polling cursor")  # noted at start-up
        delivered = create(stack, synthetic_appointment(patient(stack, 31)))
        wait_for(lambda: sent_to(stack, 31), 20, "the confirmation the rest-hook brought")
        halt(stack)

        missed = [create(stack, synthetic_appointment(patient(stack, number))) for number in (32, 33, 34)]
        wait_for(lambda: ours(stack).get("appointment") == "error", 20, "the EHR to give up delivering")
        stack = serve(outside, settings)
        for number in (32, 33, 34):
            wait_for(lambda number=number: sent_to(stack, number), 20, "a missed booking's confirmation")
        wait_for(lambda: settled(engine), 20, "every event handled")

        # The EHR's late retry of a booking the catch-up already sent: stored once, decided once.
        secret = derive_secret(settings.ehr_hook_secret.get_secret_value().encode(), "appointment")
        again = httpx.put(f"{settings.public_base_url}/ehr/notify/appointment/Appointment/{missed[0]['id']}",
                          content=json.dumps(missed[0]).encode(), timeout=10,
                          headers={"Authorization": authorization_header(secret),
                                   "Content-Type": "application/fhir+json"})
        assert again.status_code == 200
    finally:
        halt(stack)

    assert [len(sent_to(stack, number)) for number in (31, 32, 33, 34)] == [1, 1, 1, 1]
    assert inbox_feeds(engine, delivered) == ["appointment"]  # re-read by the catch-up: deduped on its version
    assert [inbox_feeds(engine, booking) for booking in missed] == [["poll:appointment"]] * 3
    engine.dispose()


def test_polling_mode_creates_no_subscription_and_removes_ours_at_start(outside: Outside, tmp_path: Path) -> None:
    settings = service_settings(outside, tmp_path)
    engine = make_engine(settings.database_url)
    stack = serve(outside, settings)  # first with Subscriptions, as before a switch to polling
    try:
        wait_for(lambda: subscriptions_ready(stack), 30, "the Subscriptions")
        assert sorted(ours(stack)) == ["appointment", "diagnostic-report", "document-reference", "invoice"]
        created = creations(stack)
    finally:
        halt(stack)

    stack = serve(outside, settings.model_copy(update={"feed_mode": "polling"}))
    try:
        wait_for(lambda: not ours(stack), 20, "the service's Subscriptions to be removed")
        wait_for(lambda: cursor(engine) and cursor(engine, "diagnostic-report"), 20, "polling to start")
        assert creations(stack) == created  # none was created at this start
        assert health(stack)["subscriptions"] == []
    finally:
        halt(stack)
    engine.dispose()
