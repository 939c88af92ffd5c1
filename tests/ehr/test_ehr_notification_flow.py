"""End to end over loopback: a real sekmet FHIR server notifies the intake router running in a real
uvicorn server; the references land in the (in-memory) sink.

Covers both sekmet delivery methods (``PUT {endpoint}/{type}/{id}`` and ``POST {endpoint}``), an
empty-payload (ping) Subscription, and a Subscription that failed into ``error`` being re-activated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from ehr.auth import FhirAuth
from ehr.client import FhirClient
from ehr.hook_secrets import derive_secret
from ehr.intake import build_intake_router
from ehr.notifications import IncomingNotification
from ehr.subscriptions import (
    DEFAULT_SUBSCRIPTION_SPECS,
    SubscriptionSpec,
    SubscriptionState,
    ensure_subscriptions,
    subscription_status,
)
from tests.support.asgi_server import serve_in_thread
from tests.support.fakes import InMemoryNotificationSink
from tests.support.fhir_server import RunningFhirServer, start_fhir_server
from tests.support.synthetic import (
    reference,
    synthetic_appointment,
    synthetic_diagnostic_report,
    synthetic_location,
    synthetic_patient,
)

pytestmark = pytest.mark.fhir
MASTER = b"synthetic-master-secret-for-tests"
PING = SubscriptionSpec("appointment-ping", "Appointment", "empty")
KEYS = [spec.key for spec in (*DEFAULT_SUBSCRIPTION_SPECS, PING)]
CAP = 64 * 1024


@pytest.fixture(scope="module")
def post_endpoint_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    # One delivery try: a failing endpoint turns the Subscription to `error` within about a second.
    with start_fhir_server(tmp_path_factory.mktemp("post"), notify_method="post-endpoint", retries=1) as server:
        yield server


@pytest.fixture(params=["put-resource", "post-endpoint"])
def ehr(request: pytest.FixtureRequest) -> RunningFhirServer:
    name = "fhir_server" if request.param == "put-resource" else "post_endpoint_server"
    server: RunningFhirServer = request.getfixturevalue(name)
    return server


@dataclass
class Bridge:
    public_base_url: str
    sink: InMemoryNotificationSink
    fhir: FhirClient


@pytest_asyncio.fixture
async def bridge(ehr: RunningFhirServer) -> AsyncIterator[Bridge]:
    """The intake router on a real loopback port, and a client on the EHR; the Subscriptions
    the test made are deleted afterwards so the shared server stops notifying."""
    sink = InMemoryNotificationSink()
    app = FastAPI()
    app.include_router(build_intake_router(sink, MASTER, KEYS, CAP))
    with serve_in_thread(app) as public_base_url:
        async with FhirClient(ehr.base_url, FhirAuth.none(), 10.0) as fhir:
            yield Bridge(public_base_url, sink, fhir)
            for sub in await fhir.search("Subscription", [("_count", "200")]):
                if str(sub.get("channel", {}).get("endpoint", "")).startswith(public_base_url):
                    await fhir.delete("Subscription", sub["id"])


async def synthetic_people(fhir: FhirClient) -> tuple[str, str]:
    patient = await fhir.create(synthetic_patient(number=42))
    location = await fhir.create(synthetic_location())
    return reference(patient), reference(location)


async def test_appointment_and_report_changes_arrive_as_references(bridge: Bridge) -> None:
    states = await ensure_subscriptions(bridge.fhir, DEFAULT_SUBSCRIPTION_SPECS, bridge.public_base_url, MASTER)
    assert all(state.status == "active" for state in states)
    patient_ref, location_ref = await synthetic_people(bridge.fhir)

    appointment = await bridge.fhir.create(synthetic_appointment(patient_ref, location_ref=location_ref))
    report = await bridge.fhir.create(synthetic_diagnostic_report(patient_ref, status="preliminary"))
    cancelled = await bridge.fhir.update({**appointment, "status": "cancelled"}, if_match="1")

    expected = {
        IncomingNotification("appointment", "resource", "Appointment", appointment["id"], "1"),
        IncomingNotification("diagnostic-report", "resource", "DiagnosticReport", report["id"], "1"),
        IncomingNotification("appointment", "resource", "Appointment", cancelled["id"], "2"),
    }
    received = await bridge.sink.wait_for(lambda items: expected <= set(items))
    # Only what we subscribed to: the Patient and Location writes produced nothing.
    assert {item.resource_type for item in received} == {"Appointment", "DiagnosticReport"}


@pytest.mark.parametrize("ehr", ["put-resource"], indirect=True)
async def test_an_empty_payload_subscription_delivers_pings(bridge: Bridge) -> None:
    [state] = await ensure_subscriptions(bridge.fhir, [PING], bridge.public_base_url, MASTER)
    assert state.status == "active"
    patient_ref, location_ref = await synthetic_people(bridge.fhir)

    await bridge.fhir.create(synthetic_appointment(patient_ref, status="proposed", location_ref=location_ref))

    received = await bridge.sink.wait_for(lambda items: len(items) >= 1)
    assert received == [IncomingNotification("appointment-ping", "ping")]


@pytest.mark.parametrize("ehr", ["post-endpoint"], indirect=True)
async def test_a_subscription_that_failed_into_error_is_reactivated(bridge: Bridge) -> None:
    specs = DEFAULT_SUBSCRIPTION_SPECS[:1]
    await ensure_subscriptions(bridge.fhir, specs, bridge.public_base_url, MASTER)
    patient_ref, location_ref = await synthetic_people(bridge.fhir)
    bridge.sink.fail_with = RuntimeError("inbox unavailable")  # the intake answers 503

    lost = await bridge.fhir.create(synthetic_appointment(patient_ref, location_ref=location_ref))
    state = await wait_for_status(bridge, specs, "error")
    assert state.error is not None and "503" in state.error
    assert bridge.sink.received == []

    bridge.sink.fail_with = None
    [repaired] = await ensure_subscriptions(bridge.fhir, specs, bridge.public_base_url, MASTER)
    assert (repaired.action, repaired.status, repaired.fhir_id) == ("reactivated", "active", state.fhir_id)
    again = await bridge.fhir.update({**lost, "status": "cancelled"}, if_match="1")

    received = await bridge.sink.wait_for(lambda items: len(items) >= 1)
    assert received == [IncomingNotification("appointment", "resource", "Appointment", again["id"], "2")]


@pytest.mark.parametrize("ehr", ["put-resource"], indirect=True)
async def test_a_real_chunked_upload_over_the_cap_is_refused(bridge: Bridge) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(CAP // 4096 + 2):
            yield b" " * 4096

    headers = {"Authorization": f"Bearer {derive_secret(MASTER, 'appointment')}",
               "Content-Type": "application/fhir+json"}
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.post(f"{bridge.public_base_url}/ehr/notify/appointment", headers=headers,
                                   content=chunks())
    assert response.status_code == 413
    assert bridge.sink.calls == 0


async def wait_for_status(
    bridge: Bridge, specs: tuple[SubscriptionSpec, ...], status: str, timeout: float = 15.0
) -> SubscriptionState:
    deadline = time.monotonic() + timeout
    while True:
        [state] = await subscription_status(bridge.fhir, specs, bridge.public_base_url)
        if state.status == status or time.monotonic() > deadline:
            assert state.status == status
            return state
        await asyncio.sleep(0.1)
