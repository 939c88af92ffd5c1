"""Pushing chained audit records to a real FHIR server (sekmet-fhir) as BALP AuditEvents: each once,
in chain order, never the unchained ones, and the high-water mark survives a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from adapter.audit.push import keep_pushing, push_audit_events, pushed_seq
from adapter.audit.tables import AuditChain
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.http.audit_api import FhirPatientDirectory
from adapter.storage.db import table_of, transaction
from ehr.client import FhirClient
from ehr.errors import FhirError
from tests.support.fixtures import fhir_client, fhir_server  # noqa: F401  (fixtures)
from tests.support.synthetic import synthetic_patient

pytestmark = pytest.mark.fhir
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def _seed(engine: Engine, kinds: list[Kind], chain_from: int | None) -> list[int]:
    """Records one entry per kind; chains them from ``chain_from`` (None: leaves them unchained)."""
    with transaction(engine) as session:
        ids = record(session, *[AuditEntry(kind, Action.EXECUTE, agent="system", patient_ref="Patient/example-1",
                                           entity_ref="link/7", detail={"op": "test"}) for kind in kinds], at=AT)
        if chain_from is not None:
            session.execute(insert(table_of(AuditChain)), [
                {"seq": chain_from + n, "event_id": event_id, "prev_hash": bytes(32), "hash": bytes([n + 1]) * 32,
                 "chained_at": AT} for n, event_id in enumerate(ids)])
    return ids


async def test_chained_records_are_pushed_once_in_order(engine: Engine, fhir_client: FhirClient) -> None:  # noqa: F811
    first = _seed(engine, list(Kind), chain_from=1)
    _seed(engine, [Kind.DISCLOSURE], chain_from=None)  # not chained yet: not pushed
    assert await push_audit_events(engine, fhir_client, batch=5) == len(Kind)
    assert pushed_seq(engine) == len(Kind)
    stored = await fhir_client.read("AuditEvent", f"bridge-{first[0]}")
    assert stored["resourceType"] == "AuditEvent" and stored["subtype"][-1]["code"] == Kind.DISCLOSURE.value
    assert await push_audit_events(engine, fhir_client) == 0  # nothing new
    later = _seed(engine, [Kind.LOGIN, Kind.RESOLVE], chain_from=len(Kind) + 1)
    assert await push_audit_events(engine, fhir_client) == 2
    assert pushed_seq(engine) == len(Kind) + 2
    resolved = await fhir_client.read("AuditEvent", f"bridge-{later[1]}")
    assert resolved["type"]["code"] == "rest"


async def test_the_fhir_patient_directory_reads_name_and_identifiers(fhir_client: FhirClient) -> None:  # noqa: F811
    created = await fhir_client.create(synthetic_patient(number=7))
    directory = FhirPatientDirectory(lambda: fhir_client)
    person = await directory.person(f"Patient/{created['id']}")
    assert person["name"] == created["name"] and person["identifier"] == created["identifier"]
    with pytest.raises(ValueError):
        await directory.person("Practitioner/example-1")


async def test_an_unreachable_ehr_keeps_the_mark_and_the_loop_alive(engine: Engine) -> None:
    _seed(engine, [Kind.LOGIN], chain_from=1)
    async with FhirClient("http://127.0.0.1:9/fhir", timeout_seconds=1.0) as unreachable:
        with pytest.raises(FhirError):
            await push_audit_events(engine, unreachable)
        stop = asyncio.Event()
        task = asyncio.create_task(keep_pushing(engine, unreachable, stop, every_seconds=0.05))
        await asyncio.sleep(0.3)
        assert not task.done()  # failures are retried, not fatal
        stop.set()
        await task
    assert pushed_seq(engine) == 0
