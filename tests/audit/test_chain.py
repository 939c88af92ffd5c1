"""The chaining step: gapless seqs in commit order, hashes anyone can recompute, identical bytes on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.chain import GENESIS, canonical_bytes, chain_head, chain_pending, has_pending
from adapter.audit.tables import AuditChain, AuditEvent, AuditPending
from adapter.audit.trail import as_row, record
from adapter.storage.db import table_of, transaction
from tests.audit.chain_helpers import entry, record_events

AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def _chain(engine: Engine) -> list[tuple[int, int, bytes, bytes]]:
    chain = table_of(AuditChain)
    with engine.connect() as connection:
        rows = connection.execute(select(chain.c.seq, chain.c.event_id, chain.c.prev_hash, chain.c.hash)
                                  .order_by(chain.c.seq)).all()
    return [(int(seq), int(event), bytes(prev), bytes(digest)) for seq, event, prev, digest in rows]


def _insert_with_id(engine: Engine, event_id: int) -> None:
    with transaction(engine) as session:
        row = as_row(entry(n=event_id), AT) | {"id": event_id}
        session.execute(insert(table_of(AuditEvent)), [row])
        session.execute(insert(table_of(AuditPending)), [{"event_id": event_id}])


def test_canonical_bytes_are_sorted_compact_json_with_utc_microseconds() -> None:
    event = {"id": 7, "recorded_at": AT, "kind": "patient-read", "action": "R", "outcome": "0", "agent": "system",
             "agent_role": None, "source": None, "patient_ref": "Patient/example-1", "entity_ref": "Appointment/9",
             "purpose": None, "detail": '{"status":"booked"}'}
    assert canonical_bytes(event, 3) == (
        b'{"action":"R","agent":"system","agent_role":null,"detail":"{\\"status\\":\\"booked\\"}",'
        b'"entity_ref":"Appointment/9","id":7,"kind":"patient-read","outcome":"0","patient_ref":"Patient/example-1",'
        b'"purpose":null,"recorded_at":"2026-01-02T03:04:05.000006+00:00","seq":3,"source":null}')
    naive = event | {"recorded_at": AT.replace(tzinfo=None)}
    assert canonical_bytes(naive, 3) == canonical_bytes(event, 3)


def test_chaining_assigns_gapless_seqs_and_recomputable_hashes(engine: Engine) -> None:
    ids = record_events(engine, 3) + record_events(engine, 2, patient="Patient/example-2")
    assert chain_pending(engine, limit=4) == 4
    assert chain_pending(engine, limit=4) == 1
    assert chain_pending(engine) == 0
    assert not has_pending(engine)
    rows = _chain(engine)
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5]
    assert [row[1] for row in rows] == ids
    assert rows[0][2] == GENESIS
    events = table_of(AuditEvent)
    prev = GENESIS
    with engine.connect() as connection:
        for seq, event_id, prev_hash, digest in rows:
            event = connection.execute(select(events).where(events.c.id == event_id)).mappings().one()
            assert prev_hash == prev
            assert digest == hashlib.sha256(prev + canonical_bytes(event, seq)).digest()
            prev = digest
        head = chain_head(connection)
    assert head == (5, rows[-1][3])


def test_the_same_event_hashes_the_same_on_both_databases(engine: Engine) -> None:
    # The expected digest is fixed: a database that returned the time or the detail differently fails here.
    _insert_with_id(engine, 41)
    chain_pending(engine)
    expected_event = {"id": 41, "recorded_at": AT, "kind": "patient-read", "action": "R", "outcome": "0",
                      "agent": "system", "agent_role": None, "source": None, "patient_ref": "Patient/example-1",
                      "entity_ref": "Appointment/example-41/_history/1", "purpose": None,
                      "detail": '{"status":"booked"}'}
    assert _chain(engine)[0][3] == hashlib.sha256(GENESIS + canonical_bytes(expected_event, 1)).digest()


def test_ids_committed_out_of_order_get_seqs_in_chaining_order(engine: Engine) -> None:
    # Event 20 commits and is chained before event 10 commits: seq follows commit order, with no gap.
    _insert_with_id(engine, 20)
    assert chain_pending(engine) == 1
    _insert_with_id(engine, 10)
    assert chain_pending(engine) == 1
    assert [(seq, event) for seq, event, _, _ in _chain(engine)] == [(1, 20), (2, 10)]


def test_concurrent_transactions_committing_in_reverse_id_order_chain_gaplessly(pg_engine: Engine) -> None:
    # Only PostgreSQL has concurrent writers: SQLite's single writer cannot commit ids out of order.
    engine = pg_engine
    with Session(engine) as first:
        [early] = record(first, entry(n=1))
        first.flush()  # holds the lower id, uncommitted
        with transaction(engine) as second:
            [late] = record(second, entry(n=2))
        assert late > early
        assert chain_pending(engine) == 1  # only the committed one is visible
        first.commit()
    assert chain_pending(engine) == 1
    assert [(seq, event) for seq, event, _, _ in _chain(engine)] == [(1, late), (2, early)]
