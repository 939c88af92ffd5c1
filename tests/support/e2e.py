"""Helpers for end-to-end tests on a :class:`adapter.demo.stack.DemoStack` (EHR, emulator, service)."""

from __future__ import annotations

from typing import Any

import httpx

from adapter.demo.stack import DemoStack
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.settings import DEMO_SECRET, Settings
from adapter.storage.db import make_engine, transaction
from tests.support.synthetic import synthetic_patient
from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.server import EmulatorServer


def health(stack: DemoStack) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.settings.public_base_url}/health", timeout=5).json())


def ehr_client(stack: DemoStack) -> httpx.Client:
    return httpx.Client(base_url=stack.ehr.base_url, timeout=10, headers={"Content-Type": "application/fhir+json"})


def create(stack: DemoStack, resource: dict[str, Any]) -> dict[str, Any]:
    with ehr_client(stack) as client:
        response = client.post(f"/{resource['resourceType']}", json=resource)
        response.raise_for_status()
        return dict(response.json())


def read(stack: DemoStack, reference: str) -> dict[str, Any]:
    with ehr_client(stack) as client:
        response = client.get(f"/{reference}")
        response.raise_for_status()
        return dict(response.json())


def patient(stack: DemoStack, number: int, *, consent: bool = True, **kw: Any) -> str:
    """A synthetic patient with mobile +1 201-555-01nn, opted in unless ``consent=False``."""
    created = create(stack, synthetic_patient(number=number, **kw))
    ref = f"Patient/{created['id']}"
    if consent:
        with transaction(make_engine(stack.settings.database_url)) as session:
            set_consent(session, ref, OPTED_IN, "admin")
    return ref


def sent_to(stack: DemoStack, number: int) -> list[dict[str, Any]]:
    """Request bodies the emulator accepted for +1 201-555-01nn, oldest first."""
    found = httpx.get(f"{stack.emulator.base_url}/_emulator/messages", timeout=5).json()
    messages = found.get("messages", found) if isinstance(found, dict) else found
    wanted = f"20155501{number:02d}"
    return [m.get("payload", m) for m in messages if str(m.get("payload", m).get("to", "")).endswith(wanted)]


def emulator_for(settings: Settings) -> tuple[EmulatorServer, Settings]:
    """A started WhatsApp emulator for ``settings``' number and WABA, and the settings pointed at it."""
    emulator = EmulatorServer(EmulatorConfig(access_token=DEMO_SECRET, app_secret=DEMO_SECRET,
                                             phone_numbers={settings.whatsapp_phone_number_id: "15550100"},
                                             waba_id=settings.whatsapp_waba_id))
    emulator.start()
    return emulator, settings.model_copy(update={"whatsapp_api_base_url": emulator.base_url})


def point_webhooks(emulator: EmulatorServer, service_url: str) -> None:
    """Makes the emulator deliver its webhooks to the service at ``service_url``."""
    httpx.put(f"{emulator.base_url}/_emulator/webhook", json={"url": f"{service_url}/whatsapp/webhook"},
              timeout=5).raise_for_status()
