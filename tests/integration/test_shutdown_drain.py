"""SIGTERM to ``bridge serve`` while a send is in flight (the Cloud API took the message and has not
answered yet): the process waits for the answer, records the send as sent with Meta's message id, and
only then exits 0, so the message is neither lost nor sent twice by the next start. Real parts: the
``bridge`` executable, the sekmet-fhir EHR, the WhatsApp emulator over HTTP (holding its answer 3 s)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select

from adapter.demo.sandbox_ehr import free_port
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.settings import DEMO_SECRET, load_settings
from adapter.storage.db import make_engine, transaction
from ehr.hook_secrets import authorization_header, derive_secret
from tests.integration.test_shutdown import BRIDGE, clean_env, read_lines, wait_until
from tests.support.fhir_server import RunningFhirServer, start_fhir_server
from tests.support.synthetic import synthetic_appointment, synthetic_patient
from whatsapp.emulator import EmulatorConfig, EmulatorServer

pytestmark = pytest.mark.fhir
HELD_SECONDS = 3.0  # how long the emulator holds its answer: the window the SIGTERM lands in


@pytest.fixture
def ehr(tmp_path: Path) -> Iterator[RunningFhirServer]:
    server = start_fhir_server(tmp_path)
    yield server
    server.stop()


def test_sigterm_waits_for_the_send_in_flight_and_records_it(ehr: RunningFhirServer, tmp_path: Path) -> None:
    defaults = load_settings(mode="demo")
    with EmulatorServer(EmulatorConfig(access_token=DEMO_SECRET, app_secret=DEMO_SECRET,
                                       phone_numbers={defaults.whatsapp_phone_number_id: "15550100"},
                                       waba_id=defaults.whatsapp_waba_id)) as emulator:
        port, url = free_port(), f"sqlite:///{tmp_path / 'bridge.db'}"
        serve = subprocess.Popen([BRIDGE, "serve"], text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=clean_env(BRIDGE_MODE="demo", BRIDGE_HTTP_PORT=str(port), BRIDGE_DATABASE_URL=url,
                                               BRIDGE_MANAGE_SUBSCRIPTIONS="false",
                                               BRIDGE_RECONCILE_INTERVAL_SECONDS="0", BRIDGE_FHIR_BASE_URL=ehr.base_url,
                                               BRIDGE_WHATSAPP_API_BASE_URL=emulator.base_url,
                                               BRIDGE_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}"))
        lines = read_lines(serve)
        try:
            _drain(serve, lines, ehr, emulator, port, url)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait(timeout=10)


def _drain(serve: subprocess.Popen[str], lines: list[str], ehr: RunningFhirServer, emulator: EmulatorServer,
           port: int, url: str) -> None:
    def answering() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answering, 60, "the service's readiness", serve, lines)
    created = httpx.post(f"{ehr.base_url}/Patient", json=synthetic_patient(number=61), timeout=10).json()
    patient_ref = f"Patient/{created['id']}"
    engine = make_engine(url)
    with transaction(engine) as session:
        set_consent(session, patient_ref, OPTED_IN, "admin")
    appointment = httpx.post(f"{ehr.base_url}/Appointment", json=synthetic_appointment(patient_ref), timeout=10).json()
    httpx.post(f"{emulator.base_url}/_emulator/faults", timeout=5,
               json={"responses": [{"accept": True, "delay_seconds": HELD_SECONDS}]}).raise_for_status()
    secret = derive_secret(DEMO_SECRET.encode(), "appointment")
    notified = httpx.put(f"http://127.0.0.1:{port}/ehr/notify/appointment/Appointment/{appointment['id']}",
                         headers={"Authorization": authorization_header(secret)}, timeout=10)
    assert notified.status_code == 200, notified.text

    def accepted() -> list[dict[str, object]]:
        return list(httpx.get(f"{emulator.base_url}/_emulator/messages", timeout=5).json()["messages"])

    wait_until(accepted, 30, "the emulator to take the message", serve, lines)
    signalled = time.monotonic()
    serve.send_signal(signal.SIGTERM)  # while the emulator still holds its answer
    assert serve.wait(timeout=60) == 0, "".join(lines)[-3000:]
    assert time.monotonic() - signalled > HELD_SECONDS / 2  # it waited for the answer rather than leave

    [message] = accepted()
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).where(
            col(OutboxMessage.resource_ref) == f"Appointment/{appointment['id']}",
            col(OutboxMessage.wamid).is_not(None))).all()
    engine.dispose()
    assert [(row.state, row.wamid, row.attempts) for row in rows] == [("sent", message["id"], 1)]
