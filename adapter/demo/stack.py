"""The demo's running stack: the sandbox EHR (sekmet-fhir), the WhatsApp emulator and the service on
free loopback ports, wired to each other, and the reads the demo and the end-to-end tests make of it
(the emulator's messages, the service's health, its database).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.engine import Engine

from adapter.app import create_app
from adapter.demo.sandbox_ehr import SandboxEhr, free_port
from adapter.demo.signals import uninterrupted
from adapter.service import Service
from adapter.settings import DEMO_SECRET, Settings, load_settings
from adapter.storage.db import make_engine, upgrade
from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.server import EmulatorServer

DEMO_SITE = "Location/demo-site-north"  # created with this id, so the demo settings can label it


@dataclass
class DemoStack:
    ehr: SandboxEhr
    emulator: EmulatorServer
    server: uvicorn.Server
    thread: threading.Thread
    settings: Settings
    service: Service

    def stop(self) -> None:
        with uninterrupted():
            self.server.should_exit = True
            self.thread.join(timeout=15)
            self.emulator.stop()
            self.ehr.stop()


def start_stack(workdir: Path, **overrides: Any) -> DemoStack:
    """EHR + emulator + service on free loopback ports, wired to each other. Interrupted or failed
    part-way, it stops what it had started (the EHR is a child process) before re-raising."""
    ehr = SandboxEhr(workdir / "ehr")
    emulator: EmulatorServer | None = None
    server: uvicorn.Server | None = None
    try:
        ehr.start()
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        settings = load_settings(**{
            "mode": "demo", "fhir_base_url": ehr.base_url, "public_base_url": public, "http_port": port,
            "database_url": f"sqlite:///{workdir / 'bridge.db'}", "portal_base_url": f"{public}/portal-demo",
            "tick_seconds": 0.2, "site_labels": {DEMO_SITE: "North Campus"}, "audit_checkpoint_seconds": 1.0,
            **overrides,
        })
        emulator = EmulatorServer(EmulatorConfig(
            access_token=DEMO_SECRET, app_secret=DEMO_SECRET, public_base_url=public,
            phone_numbers={settings.whatsapp_phone_number_id: "+1 555 0100"}, waba_id=settings.whatsapp_waba_id,
            webhook_url=f"{public}/whatsapp/webhook"))
        emulator.start()
        settings = settings.model_copy(update={"whatsapp_api_base_url": emulator.base_url})
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name="bridge-http", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return DemoStack(ehr, emulator, server, thread, settings, app.state.service)
    except BaseException:
        with uninterrupted():
            if server is not None:
                server.should_exit = True
            if emulator is not None:
                emulator.stop()
            ehr.stop()
        raise


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def demo_engine(stack: DemoStack) -> Engine:
    engine = make_engine(stack.settings.database_url)
    upgrade(engine)
    return engine


def subscriptions_ready(stack: DemoStack) -> bool:
    health = httpx.get(f"{stack.settings.public_base_url}/health", timeout=5).json()
    return bool(health["subscriptions"]) and all(s["status"] in ("active", "requested")
                                                 for s in health["subscriptions"])


def emulator_messages(stack: DemoStack, count: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = httpx.get(f"{stack.emulator.base_url}/_emulator/messages", timeout=5).json()
    if isinstance(found, dict):
        found = found.get("messages", [])
    return found if len(found) >= count else None


def texts_to(stack: DemoStack, digits: str) -> list[str]:
    return [(m.get("payload") or m)["text"]["body"] for m in emulator_messages(stack, 0) or []
            if (m.get("payload") or m).get("type") == "text" and str((m.get("payload") or m)["to"]).endswith(digits)]
