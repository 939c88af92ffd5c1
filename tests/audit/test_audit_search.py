"""FHIR-style audit search on both databases: dates with prefixes, references, codes, paging, and a
clear refusal of unknown parameters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from adapter.audit.search import AuditQueryError, iter_audit, parse_query, search_audit
from adapter.audit.tables import AuditChain
from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.storage.db import table_of, transaction


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
def seeded(engine: Engine) -> list[int]:
    ids: list[int] = []
    with transaction(engine) as session:
        for day, patient, outcome, source in [(10, "Patient/example-1", Outcome.SUCCESS, "192.0.2.1"),
                                              (11, "Patient/example-1", Outcome.MINOR_FAILURE, "192.0.2.2"),
                                              (12, "Patient/example-2", Outcome.SUCCESS, "192.0.2.3"),
                                              (13, "Patient/example-1", Outcome.SUCCESS, "192.0.2.4")]:
            ids += record(session, AuditEntry(Kind.LINK_ACCESS, Action.READ, outcome, agent="patient", source=source,
                                              patient_ref=patient, entity_ref=f"link/{day}"), at=_at(day))
        ids += record(session, AuditEntry(Kind.DISCLOSURE, Action.READ, patient_ref="Patient/example-1",
                                          entity_ref="Appointment/example-9"), at=_at(11, 8))
        session.execute(insert(table_of(AuditChain)), [
            {"seq": 1, "event_id": ids[0], "prev_hash": b"\0" * 32, "hash": b"\1" * 32, "chained_at": _at(14)}])
    return ids


def _search(engine: Engine, *pairs: tuple[str, str]) -> tuple[list[int], int]:
    with transaction(engine) as session:
        rows, total = search_audit(session, list(pairs))
    return [int(row.event.id or 0) for row in rows], total


def test_date_range_patient_and_type(engine: Engine, seeded: list[int]) -> None:
    found, total = _search(engine, ("patient", "Patient/example-1"), ("date", "ge2026-11-11"),
                           ("date", "le2026-11-13"), ("type", "link-access"))
    assert found == [seeded[1], seeded[3]] and total == 2


def test_date_prefixes_on_days_and_instants(engine: Engine, seeded: list[int]) -> None:
    assert _search(engine, ("date", "2026-11-11"))[0] == [seeded[1], seeded[4]]
    assert _search(engine, ("date", "gt2026-11-12"))[0] == [seeded[3]]
    assert _search(engine, ("date", "lt2026-11-11"))[0] == [seeded[0]]
    assert _search(engine, ("date", "ge2026-11-11T10:00:00Z"), ("date", "lt2026-11-12"))[0] == [seeded[1]]


def test_codes_outcomes_entities_and_seq(engine: Engine, seeded: list[int]) -> None:
    assert _search(engine, ("type", "110106"))[0] == [seeded[4]]  # DICOM Export = disclosure
    assert _search(engine, ("outcome", "4"))[0] == [seeded[1]]
    assert _search(engine, ("entity", "link/12"))[0] == [seeded[2]]
    assert _search(engine, ("agent", "patient"), ("patient", "Patient/example-2"))[0] == [seeded[2]]
    with transaction(engine) as session:
        rows = {row.event.id: row for row in iter_audit(session, [], batch=2)}
    assert len(rows) == 5
    assert rows[seeded[0]].seq == 1 and rows[seeded[0]].hash == b"\1" * 32
    assert rows[seeded[1]].seq is None  # not chained yet: included, seq null


def test_paging_by_offset_keeps_the_total(engine: Engine, seeded: list[int]) -> None:
    first = _search(engine, ("_count", "2"))
    second = _search(engine, ("_count", "2"), ("_offset", "2"))
    assert first == (seeded[:2], 5) and second == (seeded[2:4], 5)
    assert _search(engine, ("_count", "0")) == ([], 5)


@pytest.mark.parametrize("pairs", [[("name", "x")], [("_count", "1001")], [("date", "ge11/12/2026")],
                                   [("patient", "")], [("_offset", "-1")]])
def test_bad_parameters_are_refused(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(AuditQueryError):
        parse_query(pairs)
