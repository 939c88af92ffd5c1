"""Audit purges remove whole checkpoint ranges older than the retention period, spare legal holds,
are idempotent and audited, and leave a trail that still verifies from the boundary checkpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from adapter.audit.chain import chain_pending
from adapter.audit.checkpoints import make_checkpoint
from adapter.audit.holds import HoldNotFoundError, active_holds, place_hold, release_hold
from adapter.audit.purge import purge_audit
from adapter.audit.signing import AuditSigner
from adapter.audit.tables import AuditChain, AuditCheckpoint, AuditEvent, AuditPurge
from adapter.audit.verify import verify_trail
from adapter.storage.db import table_of, utcnow
from tests.audit.chain_helpers import record_events

SIGNER = AuditSigner.throwaway()
OLD = utcnow() - timedelta(days=3000)
CUTOFF = utcnow() - timedelta(days=2000)


@pytest.fixture
def trail(engine: Engine) -> dict[str, list[int]]:
    """Checkpoints at 4 and 8 over old records (example-2's at 5..6), at 12 over recent ones, 13..14 unsigned."""
    ids = {"first": record_events(engine, 4, at=OLD)}
    chain_pending(engine)
    make_checkpoint(engine, SIGNER, force=True)
    ids["held"] = record_events(engine, 2, patient="Patient/example-2", at=OLD)
    ids["second"] = record_events(engine, 2, at=OLD)
    chain_pending(engine)
    make_checkpoint(engine, SIGNER, force=True)
    ids["recent"] = record_events(engine, 4)
    chain_pending(engine)
    make_checkpoint(engine, SIGNER, force=True)
    ids["unsigned"] = record_events(engine, 2)
    chain_pending(engine)
    return ids


def _seqs(engine: Engine) -> tuple[list[int], list[int], list[int]]:
    chain, checkpoints, events = table_of(AuditChain), table_of(AuditCheckpoint), table_of(AuditEvent)
    with engine.connect() as connection:
        return (connection.execute(select(chain.c.seq).order_by(chain.c.seq)).scalars().all(),
                connection.execute(select(checkpoints.c.seq).order_by(checkpoints.c.seq)).scalars().all(),
                connection.execute(select(events.c.id).order_by(events.c.id)).scalars().all())


def _retention_entries(engine: Engine) -> list[str | None]:
    events = table_of(AuditEvent)
    with engine.connect() as connection:
        return connection.execute(select(events.c.detail).where(events.c.kind == "retention")
                                  .order_by(events.c.id)).scalars().all()


def test_purge_removes_exactly_the_old_checkpoint_ranges_and_verify_still_passes(
        engine: Engine, trail: dict[str, list[int]]) -> None:
    report = purge_audit(engine, older_than=CUTOFF, batch_size=3, actor="cli:tester")
    assert (report.boundary_seq, report.permit_created) == (8, True)
    assert (report.events_deleted, report.records_deleted, report.checkpoints_deleted) == (8, 8, 1)
    chain_seqs, checkpoint_seqs, event_ids = _seqs(engine)
    assert chain_seqs == list(range(9, 15))
    assert checkpoint_seqs == [8, 12]
    kept = trail["recent"] + trail["unsigned"]
    assert event_ids[:len(kept)] == kept and len(event_ids) == len(kept) + 1  # + the purge's own entry
    assert '"records":8' in (_retention_entries(engine)[0] or "")
    chain_pending(engine)  # the purge's audit entry continues the chain at 15
    verified = verify_trail(engine, SIGNER.public)
    assert verified.ok, verified.problem
    assert (verified.start_seq, verified.checked) == (8, 7)


def test_a_second_purge_deletes_nothing_and_adds_no_permit(engine: Engine, trail: dict[str, list[int]]) -> None:
    purge_audit(engine, older_than=CUTOFF, batch_size=100, actor="cli:tester")
    again = purge_audit(engine, older_than=CUTOFF, batch_size=100, actor="cli:tester")
    assert (again.boundary_seq, again.permit_created, again.events_deleted, again.checkpoints_deleted) == \
        (8, False, 0, 0)
    with engine.connect() as connection:
        assert connection.execute(select(table_of(AuditPurge).c.up_to_seq)).scalars().all() == [8]
    assert len(_retention_entries(engine)) == 2  # each run is audited
    chain_pending(engine)
    assert verify_trail(engine, SIGNER.public).ok


def test_a_patient_hold_keeps_that_patients_records_and_everything_after(
        engine: Engine, trail: dict[str, list[int]]) -> None:
    hold = place_hold(engine, "Patient/example-2", "case 2026-17", "cli:tester")
    assert [h.patient_ref for h in active_holds(engine)] == ["Patient/example-2"]
    report = purge_audit(engine, older_than=CUTOFF, batch_size=100, actor="cli:tester")
    assert (report.boundary_seq, report.events_deleted) == (4, 4)
    _, checkpoint_seqs, event_ids = _seqs(engine)
    assert set(trail["held"]) <= set(event_ids)
    assert not set(trail["first"]) & set(event_ids)
    assert checkpoint_seqs == [4, 8, 12]
    chain_pending(engine)
    assert verify_trail(engine, SIGNER.public).ok
    release_hold(engine, hold, "cli:tester")
    with pytest.raises(HoldNotFoundError):
        release_hold(engine, hold, "cli:tester")
    assert purge_audit(engine, older_than=CUTOFF, batch_size=100, actor="cli:tester").boundary_seq == 8
    assert not set(trail["held"]) & set(_seqs(engine)[2])
    chain_pending(engine)
    assert verify_trail(engine, SIGNER.public).ok


def test_a_hold_on_everything_stops_the_purge(engine: Engine, trail: dict[str, list[int]]) -> None:
    place_hold(engine, None, "regulator inquiry", "cli:tester")
    report = purge_audit(engine, older_than=CUTOFF, batch_size=100, actor="cli:tester")
    assert (report.boundary_seq, report.events_deleted) == (None, 0)
    assert _seqs(engine)[0][:2] == [1, 2]


def test_when_everything_was_purged_the_chain_continues_from_the_boundary(engine: Engine) -> None:
    record_events(engine, 3, at=OLD)
    chain_pending(engine)
    make_checkpoint(engine, SIGNER, force=True)
    assert purge_audit(engine, older_than=CUTOFF, batch_size=2, actor="cli:tester").events_deleted == 3
    assert _seqs(engine)[0] == []
    chain_pending(engine)  # the purge's own entry
    record_events(engine, 2)
    chain_pending(engine)
    make_checkpoint(engine, SIGNER, force=True)
    assert _seqs(engine)[0] == [4, 5, 6]
    report = verify_trail(engine, SIGNER.public)
    assert report.ok, report.problem
    assert (report.start_seq, report.checked, report.checkpoints_checked) == (3, 3, 2)


@pytest.mark.parametrize("statement", ["DELETE FROM audit_chain", "DELETE FROM audit_checkpoint",
                                       "UPDATE audit_chain SET event_id = event_id + 100",
                                       "UPDATE audit_checkpoint SET first_seq = 2", "DELETE FROM audit_purge"])
def test_the_triggers_refuse_changes_outside_a_purge_permit(engine: Engine, trail: dict[str, list[int]],
                                                            statement: str) -> None:
    purge_audit(engine, older_than=CUTOFF, batch_size=100, actor="cli:tester")
    with pytest.raises(DBAPIError, match="insert-only"), engine.begin() as connection:
        connection.execute(text(statement))
    assert _seqs(engine)[1] == [8, 12]
