"""``verify`` reports (records checked, records to check) as it walks the chain, up to the total."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from adapter.audit import verify
from adapter.audit.chain import chain_pending
from adapter.audit.checkpoints import make_checkpoint
from adapter.audit.signing import AuditSigner
from tests.audit.chain_helpers import record_events

SIGNER = AuditSigner.throwaway()


def test_verify_reports_increasing_counts_that_reach_the_total(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    record_events(engine, 10)
    chain_pending(engine)
    make_checkpoint(engine, SIGNER, force=True)
    monkeypatch.setattr(verify, "PROGRESS_EVERY", 3)  # ten records: reports at 3, 6, 9 and the end
    calls: list[tuple[int, int | None]] = []
    report = verify.verify_trail(engine, SIGNER.public, progress=lambda done, total: calls.append((done, total)))
    assert report.ok, report.problem
    assert calls == [(3, report.checked), (6, report.checked), (9, report.checked), (report.checked,) * 2]
    assert report.checked >= 10
    from_checkpoint: list[tuple[int, int | None]] = []
    verify.verify_trail(engine, SIGNER.public, from_seq=report.checked,
                        progress=lambda done, total: from_checkpoint.append((done, total)))
    assert from_checkpoint == [(0, 0)]  # nothing after the checkpoint it starts from
