"""An HL7 v2 message is acknowledged only after its commit: the real service on PostgreSQL, reached
through a loopback proxy the test takes down mid-stream (a database restart as its clients see it).
While it is down a message gets ``AE`` (the engine keeps it and resends); once it is back the resend
gets ``AA`` and the patient gets one confirmation, not two."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from adapter.demo.sandbox_ehr import free_port
from adapter.demo.stack import DemoStack, start_stack, wait_for
from tests.integration.test_hl7_feed import opted_in, send, settled, siu, stored
from tests.support.e2e import sent_to
from tests.support.tcp_proxy import TcpProxy, fresh_database_behind_proxy

pytestmark = [pytest.mark.fhir, pytest.mark.postgres]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[tuple[DemoStack, TcpProxy]]:
    with fresh_database_behind_proxy(postgres_url, "bridge_hl7") as (_, proxied, proxy):
        stack = start_stack(tmp_path_factory.mktemp("hl7-pg"), database_url=proxied, consent_source="registry",
                            hl7_enabled=True, hl7_listen_port=free_port(), hl7_store_timeout_seconds=5.0,
                            dispatch_backoff_seconds=0.2)
        try:
            yield stack, proxy
        finally:
            stack.stop()


def test_the_ack_comes_only_after_the_commit(stack: tuple[DemoStack, TcpProxy]) -> None:
    service, proxy = stack
    first, second = opted_in(service), opted_in(service)
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    before = siu("S12", first, "APT-PG-1", start)
    during = siu("S12", second, "APT-PG-2", start)
    assert [ack.code for ack in send(service, before)] == ["AA"]
    wait_for(lambda: sent_to(service, first), 30, "the first confirmation")
    proxy.down()
    try:
        [refused] = send(service, during)
        assert refused.code == "AE" and refused.error_code == "207"
    finally:
        proxy.up()
    assert stored(service) == 1  # nothing of the refused message was committed
    [resent] = send(service, during)
    assert resent.code == "AA" and "duplicate" not in resent.text
    wait_for(lambda: sent_to(service, second), 30, "the second confirmation")
    wait_for(lambda: settled(service), 30, "processing")
    assert len(sent_to(service, first)) == 1 and len(sent_to(service, second)) == 1
