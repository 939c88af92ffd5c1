"""Signed checkpoints: when they are made, what they sign, the exported statements, the keeper,
and the RFC 6962 Merkle root they carry."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.chain import chain_pending
from adapter.audit.checkpoints import (
    AuditKeeper,
    audit_status,
    checkpoint_statement,
    load_exported,
    make_checkpoint,
    signed_bytes,
    signer_from_settings,
    statement_signature_ok,
)
from adapter.audit.merkle import EmptyMerkleTreeError, merkle_root
from adapter.audit.signing import AuditKeyError, AuditSigner
from adapter.audit.tables import AuditChain, AuditCheckpoint
from adapter.settings import Settings
from adapter.storage.db import table_of
from tests.audit.chain_helpers import record_events


def _reference_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1 written out recursively, as the RFC states it."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(leaves[:k]) + _reference_mth(leaves[k:])).digest()


def test_merkle_root_matches_rfc_6962_for_every_tree_shape() -> None:
    leaves = [hashlib.sha256(bytes([n])).digest() for n in range(33)]
    for size in range(1, 34):
        assert merkle_root(leaves[:size]) == _reference_mth(leaves[:size]), size
    assert merkle_root([b""]) == bytes.fromhex("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    with pytest.raises(EmptyMerkleTreeError):
        merkle_root([])


def _hashes(engine: Engine, first: int, last: int) -> list[bytes]:
    chain = table_of(AuditChain)
    with engine.connect() as connection:
        return [bytes(h) for h in connection.execute(
            select(chain.c.hash).where(chain.c.seq.between(first, last)).order_by(chain.c.seq)).scalars()]


def test_a_checkpoint_is_made_every_n_records_and_signs_head_and_root(engine: Engine, tmp_path: Path) -> None:
    signer = AuditSigner.throwaway()
    record_events(engine, 3)
    chain_pending(engine)
    assert make_checkpoint(engine, signer, every=5, seconds=3600, export_dir=tmp_path) is None
    record_events(engine, 2)
    chain_pending(engine)
    first = make_checkpoint(engine, signer, every=5, seconds=3600, export_dir=tmp_path)
    assert first is not None and (first.first_seq, first.seq) == (1, 5)
    hashes = _hashes(engine, 1, 5)
    assert first.head == hashes[-1]
    assert first.merkle_root == merkle_root(hashes)
    statement = checkpoint_statement(first)
    assert statement_signature_ok(statement, signer.public)
    assert signer.public.verify(first.signature, signed_bytes(statement))
    assert not statement_signature_ok(statement | {"seq": 4}, signer.public)
    assert not statement_signature_ok(statement, AuditSigner.throwaway().public)
    # Nothing new: no empty checkpoint, even when forced.
    assert make_checkpoint(engine, signer, force=True, export_dir=tmp_path) is None
    record_events(engine, 1)
    chain_pending(engine)
    second = make_checkpoint(engine, signer, force=True, every=5, export_dir=tmp_path)
    assert second is not None and (second.first_seq, second.seq) == (6, 6)
    exported = load_exported(tmp_path / "audit-checkpoints.jsonl")
    assert exported == [statement, checkpoint_statement(second)]
    with engine.connect() as connection:
        assert connection.execute(select(table_of(AuditCheckpoint).c.seq)).scalars().all() == [5, 6]


def test_a_checkpoint_is_due_after_seconds_with_at_least_one_new_record(engine: Engine) -> None:
    signer = AuditSigner.throwaway()
    record_events(engine, 1)
    chain_pending(engine)
    assert make_checkpoint(engine, signer, every=100, seconds=3600) is None
    made = make_checkpoint(engine, signer, every=100, seconds=0.000001)
    assert made is not None and made.seq == 1
    assert make_checkpoint(engine, signer, every=100, seconds=0.000001) is None


def test_the_keeper_chains_and_checkpoints_and_idles_cheaply(engine: Engine, tmp_path: Path) -> None:
    keeper = AuditKeeper(engine, AuditSigner.throwaway(), every=4, seconds=3600, export_dir=tmp_path, batch=3)
    assert keeper.tick() == 0
    record_events(engine, 5)
    assert keeper.tick() == 5
    assert [s["seq"] for s in load_exported(tmp_path / "audit-checkpoints.jsonl")] == [5]
    assert keeper.tick() == 0
    record_events(engine, 1)
    assert keeper.tick() == 1
    assert len(load_exported(tmp_path / "audit-checkpoints.jsonl")) == 1  # 1 < every, not yet due
    keeper.seconds = 0.000001
    assert keeper.tick() == 0
    assert [s["seq"] for s in load_exported(tmp_path / "audit-checkpoints.jsonl")] == [5, 6]


def test_the_signer_comes_from_the_key_file_or_is_a_throwaway_in_demo_mode(demo_settings: Settings,
                                                                          tmp_path: Path) -> None:
    assert signer_from_settings(demo_settings).key_id != signer_from_settings(demo_settings).key_id
    key_file = tmp_path / "audit.pem"
    made = AuditSigner.generate_file(key_file)
    assert signer_from_settings(demo_settings.model_copy(update={"audit_signing_key_file": key_file})).key_id \
        == made.key_id
    with pytest.raises(AuditKeyError, match="audit_signing_key_file"):
        signer_from_settings(demo_settings.model_copy(update={"mode": "production"}))


def test_checkpoint_created_at_is_recent(engine: Engine) -> None:
    record_events(engine, 1)
    chain_pending(engine)
    made = make_checkpoint(engine, AuditSigner.throwaway(), force=True)
    assert made is not None
    with engine.connect() as connection:
        stored = connection.execute(select(table_of(AuditCheckpoint).c.created_at)).scalar_one()
    assert abs(stored - made.created_at) < timedelta(microseconds=1)


def test_the_health_summary_shows_chain_progress_and_the_last_checkpoint(engine: Engine) -> None:
    with Session(engine) as session:
        assert audit_status(session) == {"chained": 0, "pending": 0, "checkpoint_seq": None, "checkpoint_at": None}
    record_events(engine, 3)
    chain_pending(engine)
    make_checkpoint(engine, AuditSigner.throwaway(), force=True)
    record_events(engine, 2)
    with Session(engine) as session:
        status = audit_status(session)
    assert (status["chained"], status["pending"], status["checkpoint_seq"]) == (3, 2, 3)
    assert str(status["checkpoint_at"]).endswith("+00:00")
