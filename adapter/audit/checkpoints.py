"""Signed checkpoints of the audit chain, their export, and the pipeline's :class:`AuditKeeper`.

A checkpoint covers records ``first_seq..seq`` (``first_seq`` = the previous checkpoint's seq + 1)
and fixes the chain head (the hash at ``seq``) and the RFC 6962 Merkle root of their hashes
(:mod:`adapter.audit.merkle`). It is signed with Ed25519 (RFC 8032) by a key kept outside the
database (:mod:`adapter.audit.signing`), so someone who can write the database cannot rewrite
history without the signature failing.

**Signed statement** (version 1): the UTF-8 bytes of the JSON object ::

    {"created_at": "<UTC ISO 8601, microseconds>", "first_seq": n, "format": "bridge-audit-checkpoint",
     "head": "<hex>", "key_id": "<RFC 7638 thumbprint>", "merkle_root": "<hex>", "seq": n, "version": 1}

with keys sorted and no whitespace. The exported line (``audit-checkpoints.jsonl``) is that object
plus ``"signature": "<hex>"``; send it to write-once storage or a SIEM, where the database's owner
cannot delete it, and give it to ``bridge audit verify --checkpoints``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.chain import canonical_time, chain_head, chain_pending, has_pending, lock_chain
from adapter.audit.merkle import MerkleBuilder
from adapter.audit.signing import AuditKeyError, AuditPublicKey, AuditSigner
from adapter.audit.tables import AuditChain, AuditCheckpoint, AuditPending
from adapter.settings import Settings
from adapter.storage.db import table_of, transaction, utcnow

log = logging.getLogger(__name__)

STATEMENT_FORMAT = "bridge-audit-checkpoint"
STATEMENT_VERSION = 1
EXPORT_FILE = "audit-checkpoints.jsonl"
_BATCH = 5000
# audit_checkpoint.key_id holds up to 64 characters; an RFC 7638 thumbprint is 43.
KEY_ID_LENGTH = 64


def checkpoint_key_id(public_key: AuditPublicKey) -> str:
    """The key id as checkpoints carry it: the thumbprint's first :data:`KEY_ID_LENGTH` characters."""
    return public_key.key_id[:KEY_ID_LENGTH]


class ChainGapError(RuntimeError):
    """The chain has a hole where a checkpoint would cover it: refuse to sign over a tampered trail."""


class CheckpointExportError(ValueError):
    """An exported checkpoint file holds a line that is not a checkpoint statement."""


def checkpoint_statement(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """The exported form of a checkpoint: the signed statement plus ``signature`` (hex)."""
    statement = _unsigned(checkpoint.seq, checkpoint.first_seq, checkpoint.head, checkpoint.merkle_root,
                          checkpoint.created_at, checkpoint.key_id)
    statement["signature"] = checkpoint.signature.hex()
    return statement


def signed_bytes(statement: dict[str, Any]) -> bytes:
    """The bytes the signature covers: the statement without ``signature``, canonical JSON."""
    unsigned = {key: value for key, value in statement.items() if key != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def statement_signature_ok(statement: dict[str, Any], trusted: AuditPublicKey | Sequence[AuditPublicKey]) -> bool:
    """Whether ``statement`` is signed by the trusted key it names (several are trusted after the
    signing key was rotated: each checkpoint names the key that signed it)."""
    try:
        signature = bytes.fromhex(str(statement["signature"]))
    except (KeyError, ValueError):
        return False
    keys = [trusted] if isinstance(trusted, AuditPublicKey) else list(trusted)
    named = [key for key in keys if checkpoint_key_id(key) == statement.get("key_id")]
    return bool(named) and named[0].verify(signature, signed_bytes(statement))


def load_exported(path: Path) -> list[dict[str, Any]]:
    """The statements of an exported ``audit-checkpoints.jsonl`` file, in file order."""
    statements = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            statement = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CheckpointExportError(f"{path.name} line {number} is not JSON") from exc
        if not isinstance(statement, dict) or statement.get("format") != STATEMENT_FORMAT:
            raise CheckpointExportError(f"{path.name} line {number} is not an audit checkpoint statement")
        statements.append(statement)
    return statements


def make_checkpoint(engine: Engine, signer: AuditSigner, *, force: bool = False, every: int = 1000,
                    seconds: float = 300.0, export_dir: Path | None = None) -> AuditCheckpoint | None:
    """Signs a checkpoint over the records chained since the last one, when ``every`` records are
    new, or ``seconds`` passed with at least one new record, or ``force``; else returns None.

    The export line is appended after the commit: a crash in between leaves a checkpoint that
    only the database holds (``verify`` still checks it), never an exported one the database lacks.
    """
    chain = table_of(AuditChain)
    with transaction(engine) as session:
        lock_chain(session)
        due = _due_range(session, every=every, seconds=seconds, force=force)
        if due is None:
            return None
        first_seq, head_seq, head, now = due
        builder = MerkleBuilder()
        after = first_seq - 1
        while after < head_seq:
            hashes = session.execute(select(chain.c.seq, chain.c.hash)
                                     .where(chain.c.seq > after, chain.c.seq <= head_seq)
                                     .order_by(chain.c.seq).limit(_BATCH)).all()
            for seq, digest in hashes:
                if seq != after + 1:
                    raise ChainGapError(f"audit record {after + 1} is missing; run `bridge audit verify`")
                builder.add(bytes(digest))
                after = int(seq)
            if not hashes:
                raise ChainGapError(f"audit record {after + 1} is missing; run `bridge audit verify`")
        root = builder.root()
        key_id = checkpoint_key_id(signer.public)
        statement = _unsigned(head_seq, first_seq, head, root, now, key_id)
        checkpoint = AuditCheckpoint(seq=head_seq, first_seq=first_seq, head=head, merkle_root=root,
                                     created_at=now, key_id=key_id,
                                     signature=signer.sign(signed_bytes(statement)))
        session.add(checkpoint)
    if export_dir is not None:
        export_dir.mkdir(parents=True, exist_ok=True)
        with (export_dir / EXPORT_FILE).open("a", encoding="utf-8") as file:
            file.write(json.dumps(checkpoint_statement(checkpoint), sort_keys=True, separators=(",", ":")) + "\n")
    return checkpoint


def _due_range(connection: Session | Connection, *, every: int, seconds: float,
               force: bool) -> tuple[int, int, bytes, datetime] | None:
    """(first_seq, seq, head, now) of the checkpoint to make now, or None when none is due."""
    checkpoints, chain = table_of(AuditCheckpoint), table_of(AuditChain)
    head_seq, head = chain_head(connection)
    last = connection.execute(select(checkpoints.c.seq, checkpoints.c.created_at)
                              .order_by(checkpoints.c.seq.desc()).limit(1)).first()
    last_seq = int(last[0]) if last else 0
    if head_seq <= last_seq:
        return None
    now = utcnow()
    if last is not None:
        since: datetime = last[1]
    else:
        since = connection.execute(select(func.min(chain.c.chained_at))).scalar() or now
    if force or head_seq - last_seq >= every or now - since >= timedelta(seconds=seconds):
        return last_seq + 1, head_seq, head, now
    return None


def signer_from_settings(settings: Settings) -> AuditSigner:
    """The configured checkpoint signer; in demo mode without a key file, a throwaway key."""
    if settings.audit_signing_key_file is not None:
        return AuditSigner.load(settings.audit_signing_key_file)
    if settings.mode == "demo":
        log.warning("audit checkpoints are signed with a throwaway key (demo mode, no audit_signing_key_file)")
        return AuditSigner.throwaway()
    raise AuditKeyError("audit_signing_key_file is not set; create one with `bridge audit keygen --out PATH`")


@dataclass
class AuditKeeper:
    """What the pipeline calls each tick (from a worker thread): chain what is queued, then sign a
    checkpoint when one is due. Idle ticks cost one indexed read."""

    engine: Engine
    signer: AuditSigner
    every: int = 1000
    seconds: float = 300.0
    export_dir: Path | None = None
    batch: int = 1000
    _unsigned_records: bool = True  # unknown at start-up: look once

    def tick(self) -> int:
        """Returns how many records it chained."""
        chained = 0
        if has_pending(self.engine):
            # Chain in steps of at most `every` so a backlog still gets a checkpoint per `every` records.
            step = min(self.batch, self.every)
            while True:
                count = chain_pending(self.engine, limit=step)
                chained += count
                if count:
                    self._unsigned_records = True
                    self._maybe_checkpoint()
                if count < step:
                    break
        if self._unsigned_records:
            self._maybe_checkpoint()
        return chained

    def _maybe_checkpoint(self) -> None:
        # Decide on a read-only connection first: the write transaction is taken only when due.
        with self.engine.connect() as connection:
            due = _due_range(connection, every=self.every, seconds=self.seconds, force=False)
            self._unsigned_records = _records_after_last_checkpoint(connection)
        if due is not None:
            make_checkpoint(self.engine, self.signer, every=self.every, seconds=self.seconds,
                            export_dir=self.export_dir)
            self._unsigned_records = False


def _records_after_last_checkpoint(connection: Connection) -> bool:
    head_seq, _ = chain_head(connection)
    last = connection.execute(select(func.max(table_of(AuditCheckpoint).c.seq))).scalar() or 0
    return head_seq > int(last)


def _unsigned(seq: int, first_seq: int, head: bytes, root: bytes, created_at: datetime, key_id: str) -> dict[str, Any]:
    return {"format": STATEMENT_FORMAT, "version": STATEMENT_VERSION, "first_seq": int(first_seq), "seq": int(seq),
            "head": bytes(head).hex(), "merkle_root": bytes(root).hex(), "created_at": canonical_time(created_at),
            "key_id": key_id}


def audit_status(session: Session) -> dict[str, Any]:
    """For ``/health``: how far the chain is, how many records wait for it, and the last signed
    checkpoint — numbers only. A growing ``pending`` or an old checkpoint means the chaining step is
    not running."""
    head_seq, _ = chain_head(session)
    pending = session.execute(select(func.count()).select_from(table_of(AuditPending))).scalar() or 0
    checkpoints = table_of(AuditCheckpoint)
    last = session.execute(select(checkpoints.c.seq, checkpoints.c.created_at)
                           .order_by(checkpoints.c.seq.desc()).limit(1)).first()
    return {"chained": head_seq, "pending": int(pending), "checkpoint_seq": int(last[0]) if last else None,
            "checkpoint_at": canonical_time(last[1]) if last else None}
