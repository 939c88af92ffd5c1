"""``verify`` passes an intact trail and names the first bad record of a tampered one: an edited event,
a deleted tail, two records swapped, a deleted queue row, forged or deleted checkpoints."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from adapter.audit.chain import chain_pending
from adapter.audit.checkpoints import load_exported, make_checkpoint
from adapter.audit.signing import AuditSigner
from adapter.audit.verify import verify_trail
from adapter.storage.db import utcnow
from tests.audit.chain_helpers import blob, record_events, tamper

SIGNER = AuditSigner.throwaway()


@pytest.fixture
def trail(engine: Engine, tmp_path: Path) -> list[int]:
    """Ten records: checkpoints at 4 and 8, records 9 and 10 chained but not yet checkpointed."""
    ids = []
    for count in (4, 4, 2):
        ids += record_events(engine, count)
        chain_pending(engine)
        if count == 4:
            make_checkpoint(engine, SIGNER, force=True, export_dir=tmp_path)
    return ids


def _exported(tmp_path: Path) -> list[dict[str, object]]:
    return load_exported(tmp_path / "audit-checkpoints.jsonl")


def test_an_intact_trail_verifies(engine: Engine, trail: list[int], tmp_path: Path) -> None:
    report = verify_trail(engine, SIGNER.public, exported=_exported(tmp_path))
    assert report.ok, report.problem
    assert (report.checked, report.checkpoints_checked, report.first_bad_seq) == (10, 2, None)
    from_checkpoint = verify_trail(engine, SIGNER.public, from_seq=4)
    assert from_checkpoint.ok and from_checkpoint.checked == 6


def test_an_edited_event_is_the_first_bad_record(engine: Engine, trail: list[int]) -> None:
    tamper(engine, f"UPDATE audit_event SET outcome = '8' WHERE id = {trail[5]}",
           f"UPDATE audit_event SET outcome = '8' WHERE id = {trail[8]}")
    report = verify_trail(engine, SIGNER.public)
    assert not report.ok
    assert report.first_bad_seq == 6
    assert "does not match its hash" in (report.problem or "")
    assert report.checked == 5


def test_an_edited_uncheckpointed_event_is_caught_by_the_chain(engine: Engine, trail: list[int]) -> None:
    tamper(engine, f"UPDATE audit_event SET patient_ref = 'Patient/example-2' WHERE id = {trail[9]}")
    assert verify_trail(engine, SIGNER.public).first_bad_seq == 10


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(engine: Engine, trail: list[int]) -> None:
    # Whoever edits event 3 and recomputes every hash after it still cannot re-sign checkpoint 4.
    from sqlalchemy import select

    from adapter.audit.chain import GENESIS, record_hash
    from adapter.audit.tables import AuditChain, AuditEvent
    from adapter.storage.db import table_of

    tamper(engine, f"UPDATE audit_event SET agent = 'user:someone-else' WHERE id = {trail[2]}")
    chain, events = table_of(AuditChain), table_of(AuditEvent)
    with engine.connect() as connection:
        rows = connection.execute(select(chain.c.seq, events).join(events, events.c.id == chain.c.event_id)
                                  .order_by(chain.c.seq)).mappings().all()
    statements, prev = [], GENESIS
    for row in rows:
        digest = record_hash(prev, row, row["seq"])
        statements.append(f"UPDATE audit_chain SET prev_hash = {blob(engine, prev)}, hash = {blob(engine, digest)} "
                          f"WHERE seq = {row['seq']}")
        prev = digest
    tamper(engine, *statements)
    report = verify_trail(engine, SIGNER.public)
    assert not report.ok
    assert "checkpoint 4" in (report.problem or "")


def test_a_deleted_tail_of_checkpointed_records_is_caught(engine: Engine, trail: list[int]) -> None:
    doomed = ", ".join(str(event_id) for event_id in trail[6:])
    tamper(engine, "DELETE FROM audit_chain WHERE seq >= 7", f"DELETE FROM audit_event WHERE id IN ({doomed})")
    report = verify_trail(engine, SIGNER.public)
    assert not report.ok
    assert report.first_bad_seq == 7
    assert "were deleted" in (report.problem or "")


def test_deleting_the_tail_with_its_checkpoint_is_caught_by_the_exported_statements(
        engine: Engine, trail: list[int], tmp_path: Path) -> None:
    doomed = ", ".join(str(event_id) for event_id in trail[4:])
    tamper(engine, "DELETE FROM audit_chain WHERE seq >= 5", f"DELETE FROM audit_event WHERE id IN ({doomed})",
           "DELETE FROM audit_checkpoint WHERE seq = 8")
    assert verify_trail(engine, SIGNER.public).ok  # the database alone now looks like a shorter trail
    report = verify_trail(engine, SIGNER.public, exported=_exported(tmp_path))
    assert not report.ok
    assert report.first_bad_seq == 8
    assert "missing from the database" in (report.problem or "")


def test_two_records_swapped_are_caught_at_the_first(engine: Engine, trail: list[int]) -> None:
    tamper(engine, "UPDATE audit_chain SET event_id = -1 WHERE seq = 3",
           f"UPDATE audit_chain SET event_id = {trail[2]} WHERE seq = 4",
           f"UPDATE audit_chain SET event_id = {trail[3]} WHERE seq = 3")
    report = verify_trail(engine, SIGNER.public)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "reordered" in (report.problem or "")


def test_a_deleted_record_leaves_a_gap(engine: Engine, trail: list[int]) -> None:
    tamper(engine, "DELETE FROM audit_chain WHERE seq = 2")
    report = verify_trail(engine, SIGNER.public)
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "missing" in (report.problem or "")


def test_a_deleted_pending_row_is_caught(engine: Engine, trail: list[int]) -> None:
    [queued, lost] = record_events(engine, 2)
    assert verify_trail(engine, SIGNER.public).ok
    tamper(engine, f"DELETE FROM audit_pending WHERE event_id = {lost}")
    report = verify_trail(engine, SIGNER.public)
    assert not report.ok
    assert f"audit event {lost} is neither chained nor queued" in (report.problem or "")
    assert queued < lost


def test_an_event_pending_longer_than_the_grace_period_is_reported(engine: Engine, trail: list[int]) -> None:
    record_events(engine, 1, at=utcnow() - timedelta(hours=1))
    assert verify_trail(engine, SIGNER.public, pending_grace=timedelta(hours=2)).ok
    report = verify_trail(engine, SIGNER.public, pending_grace=timedelta(minutes=10))
    assert not report.ok
    assert "waited for chaining" in (report.problem or "")


def test_checkpoints_signed_by_another_key_or_altered_fail(engine: Engine, trail: list[int],
                                                            tmp_path: Path) -> None:
    other = verify_trail(engine, AuditSigner.throwaway().public)
    assert not other.ok and other.first_bad_seq == 4
    tamper(engine, "UPDATE audit_checkpoint SET first_seq = 2 WHERE seq = 4")
    report = verify_trail(engine, SIGNER.public)
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "not signed" in (report.problem or "")


def test_after_the_signing_key_is_rotated_the_trail_verifies_with_every_key_it_used(
        engine: Engine, trail: list[int], tmp_path: Path) -> None:
    rotated = AuditSigner.throwaway()
    record_events(engine, 3)
    chain_pending(engine)
    make_checkpoint(engine, rotated, force=True, export_dir=tmp_path)  # records 9..13 under the new key
    both = verify_trail(engine, [SIGNER.public, rotated.public], exported=_exported(tmp_path))
    assert both.ok, both.problem
    assert (both.checked, both.checkpoints_checked) == (13, 3)
    old_only = verify_trail(engine, SIGNER.public)
    assert (old_only.ok, old_only.first_bad_seq) == (False, 13)
    assert "not signed by a trusted audit key" in (old_only.problem or "")


def test_a_start_that_is_not_a_checkpoint_is_refused(engine: Engine, trail: list[int]) -> None:
    report = verify_trail(engine, SIGNER.public, from_seq=5)
    assert not report.ok
    assert "no checkpoint at seq 5" in (report.problem or "")


def test_the_cli_chains_verifies_and_exits_1_naming_the_first_bad_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from adapter.cli.audit import audit_app
    from adapter.storage.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    key = tmp_path / "audit.pem"
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    monkeypatch.setenv("BRIDGE_AUDIT_SIGNING_KEY_FILE", str(key))
    monkeypatch.setenv("BRIDGE_AUDIT_CHECKPOINT_EXPORT_DIR", str(tmp_path / "export"))
    runner = CliRunner()
    made = runner.invoke(audit_app, ["keygen", "--out", str(key)])
    assert made.exit_code == 0 and "BEGIN PUBLIC KEY" in made.output
    assert runner.invoke(audit_app, ["keygen", "--out", str(key)]).exit_code == 2  # never overwritten
    (tmp_path / "public.pem").write_text(runner.invoke(audit_app, ["public-key"]).output)
    engine = make_engine(url)
    upgrade(engine)
    ids = record_events(engine, 3)
    placed = runner.invoke(audit_app, ["hold", "place", "--patient", "Patient/example-1", "--reason", "case 7"])
    assert placed.exit_code == 0
    assert "Patient/example-1" in runner.invoke(audit_app, ["hold", "list"]).output
    chained = runner.invoke(audit_app, ["chain"])
    assert chained.exit_code == 0 and "chained 5 record(s)" in chained.output  # 3 + the hold + the chain run
    checked = runner.invoke(audit_app, ["verify", "--public-key", str(tmp_path / "public.pem"),
                                        "--checkpoints", str(tmp_path / "export" / "audit-checkpoints.jsonl")])
    assert checked.exit_code == 0, checked.output
    assert "intact: 5 record(s)" in checked.output
    assert "nothing purged" in runner.invoke(audit_app, ["purge"]).output
    assert runner.invoke(audit_app, ["grant-app-role", "bridge_app"]).exit_code == 2  # SQLite
    tamper(engine, f"UPDATE audit_event SET agent = 'user:mallory' WHERE id = {ids[1]}")
    broken = runner.invoke(audit_app, ["verify"])
    assert broken.exit_code == 1
    assert "record 2" in broken.output
    engine.dispose()
