"""Operating the service: JSON log lines that follow one notification, and the health endpoints an
orchestrator reads.

Real parts: one `bridge serve` process (``BRIDGE_LOG_FORMAT=json``, its stderr kept in a file) on a fresh
PostgreSQL database reached through a loopback proxy the test takes down (the shared server itself is not
stopped), the sekmet FHIR server as the EHR and the WhatsApp emulator, which posts status webhooks back.
One stack serves the module.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from adapter.ops.logs import event_id_of
from adapter.settings import DEMO_SECRET
from bench.multi_instance import Cluster, book, notify
from bench.pipeline_throughput import Database, digits, fictional_numbers
from ehr.hook_secrets import derive_secret
from tests.support.tcp_proxy import TcpProxy, fresh_database_behind_proxy

pytestmark = pytest.mark.fhir


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[tuple[Cluster, TcpProxy, str]]:
    with fresh_database_behind_proxy(postgres_url, "bridge_ops") as (database_url, proxied, proxy):
        cluster = Cluster(tmp_path_factory.mktemp("ops"), Database(proxied))
        try:
            cluster.start_cluster(1, tick_seconds=0.2, settings={"BRIDGE_LOG_FORMAT": "json",
                                                                 "BRIDGE_LOG_LEVEL": "INFO"})
            yield cluster, proxy, database_url
        finally:
            cluster.stop()


def _until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _log_lines(cluster: Cluster) -> list[dict[str, Any]]:
    """Every line the service wrote, each parsed as JSON (a line that is not JSON fails the test)."""
    lines = (cluster.workdir / "service-0.log").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=15)


def test_one_notifications_journey_shares_one_event_id_and_logs_no_number_or_token(
        stack: tuple[Cluster, TcpProxy, str]) -> None:
    cluster, _, _ = stack
    number = fictional_numbers(1)[0]
    events = asyncio.run(book(cluster, [number]))
    [appointment] = events.appointments
    expected = event_id_of(f"Appointment/{appointment['id']}")
    asyncio.run(notify(cluster, events))

    def journey() -> list[str] | None:
        messages = [line["message"] for line in _log_lines(cluster) if line.get("event_id") == expected]
        return messages if any(m.startswith("status ") for m in messages) else None

    messages = _until(journey, 60, "a status applied to the notification's message")
    steps = ("EHR notification stored", "decided: ", "sent: ", "status ")
    assert all(any(m.startswith(step) for m in messages) for step in steps), messages

    sent = httpx.get(f"{cluster.emulator_url}/_emulator/messages", timeout=5).json()
    sent_text = json.dumps(sent)
    link_tokens = set(re.findall(r"/l/([^/\s\"?#\\]+)", sent_text))
    log_text = (cluster.workdir / "service-0.log").read_text(encoding="utf-8")
    secrets = {DEMO_SECRET, derive_secret(DEMO_SECRET.encode(), "appointment"), *link_tokens}
    assert digits(number) in sent_text  # the number was sent to, so looking for it in the log means something
    for forbidden in (number, digits(number), digits(number)[1:], *secrets):
        assert forbidden not in log_text


def test_readiness_turns_503_while_the_database_is_away_and_200_when_back(
        stack: tuple[Cluster, TcpProxy, str]) -> None:
    cluster, proxy, _ = stack
    url = cluster.urls[0]
    assert _get(f"{url}/readyz").json() == {"status": "ready",
                                            "checks": {"database": "ok", "migrations": "at head"}}
    proxy.down()
    try:
        answer = _until(lambda: (r := _get(f"{url}/readyz")).status_code == 503 and r, 30, "readiness to fail")
        assert answer.json()["status"] == "not ready"
        assert answer.json()["checks"]["database"].startswith("unreachable")
        assert _get(f"{url}/livez").status_code == 200  # alive: no restart for a database outage
        health = _get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] == "down"
    finally:
        proxy.up()
    _until(lambda: _get(f"{url}/readyz").status_code == 200, 60, "readiness once the database is back")
    assert _get(f"{url}/health").status_code == 200


def test_a_schema_behind_the_code_is_not_ready(stack: tuple[Cluster, TcpProxy, str]) -> None:
    cluster, _, database_url = stack
    url = cluster.urls[0]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            head = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            # What readiness reads of a database nobody migrated to this release: an earlier revision.
            connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        try:
            answer = _get(f"{url}/readyz")
            assert answer.status_code == 503
            assert answer.json()["checks"]["migrations"].startswith("not at head (at 0001;")
            assert _get(f"{url}/health").status_code == 503
        finally:
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        assert _get(f"{url}/readyz").status_code == 200
    finally:
        engine.dispose()
