"""``verify``: recomputes the audit trail from a signed checkpoint and reports the first bad record.

What it proves, in order (the first failure is reported):

1. every checkpoint carries a valid Ed25519 signature by the auditor's public key (RFC 8032), and,
   given the exported statements (write-once storage, :mod:`adapter.audit.checkpoints`), the
   database holds exactly those: a deleted or altered checkpoint is caught;
2. from the start checkpoint (after a purge: the boundary checkpoint) every record's seq follows the
   one before (no gap), its event exists, its ``prev_hash`` is the previous record's hash, and its
   hash recomputed from the event's content equals the stored one (an edited event, or two records
   reordered, fails here);
3. every checkpoint's head and RFC 6962 Merkle root match the recomputed records, and no checkpoint
   covers records the trail no longer has (a deleted tail);
4. every event is chained or queued, and none has been queued longer than ``pending_grace``.

Rows are streamed in batches of :data:`BATCH`, so memory stays bounded on millions of records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Engine

from adapter.audit.chain import EVENT_COLUMNS, GENESIS, record_hash
from adapter.audit.checkpoints import checkpoint_statement, statement_signature_ok
from adapter.audit.merkle import MerkleBuilder
from adapter.audit.signing import AuditPublicKey
from adapter.audit.tables import AuditChain, AuditCheckpoint, AuditEvent, AuditPending, AuditPurge
from adapter.storage.db import table_of, utcnow

BATCH = 5000
PROGRESS_EVERY = 1000  # records between two progress reports: a bar that moves, at no cost per record
# (records checked, records to check); the CLI draws it, verification stays free of it.
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class VerifyReport:
    """The outcome; ``problem`` is one sentence an auditor can act on (None when ``ok``)."""

    ok: bool
    checked: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    start_seq: int = 0  # the checkpoint the recomputation started from (0: the genesis)


class _Bad(Exception):
    def __init__(self, problem: str, seq: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.seq = problem, seq


def verify_trail(engine: Engine, public_key: AuditPublicKey | Sequence[AuditPublicKey], *,
                 from_seq: int | None = None,
                 exported: list[dict[str, Any]] | None = None,
                 pending_grace: timedelta = timedelta(minutes=10),
                 progress: Progress | None = None) -> VerifyReport:
    """Verifies the trail (see the module docstring); read-only, safe against a live database.
    ``progress`` gets (records checked, records after the start) every :data:`PROGRESS_EVERY` records
    and once at the end of the walk."""
    tally = {"checked": 0, "checkpoints": 0, "start": 0}
    try:
        with engine.connect() as connection:
            checkpoints = _checkpoints(connection)
            _check_signatures(checkpoints, public_key, exported, connection, tally)
            start_seq, start_hash = _start(connection, checkpoints, from_seq)
            tally["start"] = start_seq
            last_seq = _check_records(connection, checkpoints, start_seq, start_hash, tally,
                                      _reporter(connection, start_seq, progress))
            _check_tail(checkpoints, last_seq)
            _check_queue(connection, pending_grace)
    except _Bad as bad:
        return VerifyReport(False, tally["checked"], tally["checkpoints"], bad.seq, bad.problem,
                            tally["start"])
    return VerifyReport(True, tally["checked"], tally["checkpoints"], start_seq=tally["start"])


def _checkpoints(connection: Connection) -> dict[int, AuditCheckpoint]:
    # One row per `audit_checkpoint_every` records: thousands, not millions; kept in memory.
    table = table_of(AuditCheckpoint)
    rows = connection.execute(select(table).order_by(table.c.seq)).mappings().all()
    return {int(row["seq"]): AuditCheckpoint(**row) for row in rows}


def _check_signatures(checkpoints: dict[int, AuditCheckpoint],
                      public_key: AuditPublicKey | Sequence[AuditPublicKey],
                      exported: list[dict[str, Any]] | None, connection: Connection,
                      progress: dict[str, int]) -> None:
    statements = {seq: checkpoint_statement(cp) for seq, cp in checkpoints.items()}
    for seq, statement in statements.items():
        if not statement_signature_ok(statement, public_key):
            raise _Bad(f"checkpoint {seq} is not signed by a trusted audit key (it names {statement.get('key_id')}): "
                       "it was forged or altered", seq)
        progress["checkpoints"] += 1
    if exported is None:
        return
    purged_before = connection.execute(select(func.max(table_of(AuditPurge).c.boundary_seq))).scalar() or 0
    exported_seqs = set()
    for statement in sorted(exported, key=lambda item: int(item.get("seq", 0))):
        seq = int(statement.get("seq", 0))
        exported_seqs.add(seq)
        if not statement_signature_ok(statement, public_key):
            raise _Bad(f"exported checkpoint {seq} is not signed by a trusted audit key", seq)
        if seq in statements:
            if statements[seq] != statement:
                raise _Bad(f"checkpoint {seq} in the database differs from the exported one", seq)
        elif seq >= purged_before:  # checkpoints before a purge boundary were deleted by the purge
            raise _Bad(f"exported checkpoint {seq} is missing from the database: checkpoints were deleted", seq)
    newest_exported = max(exported_seqs, default=0)
    for seq in statements:
        if seq <= newest_exported and seq not in exported_seqs and seq >= purged_before:
            raise _Bad(f"checkpoint {seq} is in the database but not in the exported statements", seq)


def _start(connection: Connection, checkpoints: dict[int, AuditCheckpoint], from_seq: int | None) -> tuple[int, bytes]:
    """(seq, hash) the recomputation continues from: a checkpoint, the purge boundary, or the genesis."""
    if from_seq is None:
        from_seq = connection.execute(select(func.max(table_of(AuditPurge).c.boundary_seq))).scalar()
        if from_seq is None or int(from_seq) == 0:
            return 0, GENESIS
        from_seq = int(from_seq)
    if from_seq == 0:
        return 0, GENESIS
    checkpoint = checkpoints.get(from_seq)
    if checkpoint is None:
        raise _Bad(f"there is no checkpoint at seq {from_seq} to start from", from_seq)
    return from_seq, bytes(checkpoint.head)


def _rows(connection: Connection, after: int) -> Iterator[Any]:
    chain, events = table_of(AuditChain), table_of(AuditEvent)
    columns = [chain.c.seq, chain.c.event_id, chain.c.prev_hash, chain.c.hash,
               *(events.c[column].label(f"e_{column}") for column in EVENT_COLUMNS)]
    while True:
        batch = connection.execute(select(*columns).outerjoin(events, events.c.id == chain.c.event_id)
                                   .where(chain.c.seq > after).order_by(chain.c.seq).limit(BATCH)).mappings().all()
        yield from batch
        if len(batch) < BATCH:
            return
        after = int(batch[-1]["seq"])


def _reporter(connection: Connection, start_seq: int, progress: Progress | None) -> Callable[[int], None]:
    if progress is None:
        return lambda checked: None
    chain = table_of(AuditChain)
    total = int(connection.execute(select(func.count()).select_from(chain).where(chain.c.seq > start_seq))
                .scalar() or 0)
    # Records chained while the walk runs are checked too: the total grows rather than being passed.
    return lambda checked: progress(checked, max(total, checked))


def _check_records(connection: Connection, checkpoints: dict[int, AuditCheckpoint], start_seq: int,
                   start_hash: bytes, progress: dict[str, int], report: Callable[[int], None]) -> int:
    """Walks the chain after ``start_seq``; returns the last seq seen."""
    expected, prev = start_seq + 1, start_hash
    starts = {cp.first_seq: cp for cp in checkpoints.values() if cp.first_seq > start_seq}
    current: tuple[AuditCheckpoint, MerkleBuilder] | None = None
    for row in _rows(connection, start_seq):
        seq = int(row["seq"])
        if seq != expected:
            raise _Bad(f"record {expected} is missing: the trail jumps from {expected - 1} to {seq}", expected)
        if row["e_id"] is None:
            raise _Bad(f"record {seq}: its audit event {row['event_id']} was deleted", seq)
        if bytes(row["prev_hash"]) != prev:
            raise _Bad(f"record {seq} does not link to record {seq - 1}: the chain was rewritten", seq)
        event = {column: row[f"e_{column}"] for column in EVENT_COLUMNS}
        digest = record_hash(prev, event, seq)
        if digest != bytes(row["hash"]):
            raise _Bad(f"record {seq} (event {row['event_id']}) does not match its hash: "
                       "the event was changed or records were reordered", seq)
        if seq in starts:
            current = (starts[seq], MerkleBuilder())
        if current is not None:
            current[1].add(digest)
            if seq == current[0].seq:
                _check_checkpoint(current[0], digest, current[1])
                current = None
        progress["checked"] += 1
        if progress["checked"] % PROGRESS_EVERY == 0:
            report(progress["checked"])
        expected, prev = seq + 1, digest
    report(progress["checked"])
    return expected - 1


def _check_checkpoint(checkpoint: AuditCheckpoint, head: bytes, builder: MerkleBuilder) -> None:
    if bytes(checkpoint.head) != head:
        raise _Bad(f"checkpoint {checkpoint.seq}'s signed head does not match record {checkpoint.seq}", checkpoint.seq)
    if bytes(checkpoint.merkle_root) != builder.root():
        raise _Bad(f"checkpoint {checkpoint.seq}'s signed Merkle root does not match records "
                   f"{checkpoint.first_seq}..{checkpoint.seq}", checkpoint.first_seq)


def _check_tail(checkpoints: dict[int, AuditCheckpoint], last_seq: int) -> None:
    previous = None
    for seq, checkpoint in checkpoints.items():
        if previous is not None and checkpoint.first_seq != previous + 1:
            raise _Bad(f"checkpoint {seq} starts at record {checkpoint.first_seq}, not {previous + 1}: "
                       "a checkpoint was removed", previous + 1)
        previous = seq
    newest = max(checkpoints, default=0)
    if newest > last_seq:
        raise _Bad(f"checkpoint {newest} covers records up to {newest} but the trail ends at {last_seq}: "
                   f"records {last_seq + 1}..{newest} were deleted", last_seq + 1)


def _check_queue(connection: Connection, pending_grace: timedelta) -> None:
    events, chain, pending = table_of(AuditEvent), table_of(AuditChain), table_of(AuditPending)
    lost = connection.execute(
        select(events.c.id).outerjoin(chain, chain.c.event_id == events.c.id)
        .outerjoin(pending, pending.c.event_id == events.c.id)
        .where(chain.c.event_id.is_(None), pending.c.event_id.is_(None)).order_by(events.c.id).limit(1)).scalar()
    if lost is not None:
        raise _Bad(f"audit event {lost} is neither chained nor queued for chaining: it was removed from the queue")
    stale = connection.execute(
        select(events.c.id).join(pending, pending.c.event_id == events.c.id)
        .where(events.c.recorded_at < utcnow() - pending_grace).order_by(events.c.id).limit(1)).scalar()
    if stale is not None:
        raise _Bad(f"audit event {stale} has waited for chaining longer than {pending_grace}: "
                   "the chaining step is not running or its queue was tampered with")
