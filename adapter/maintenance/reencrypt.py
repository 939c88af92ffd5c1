"""Online rotation of the data key: :func:`reencrypt` rewrites every encrypted value not under the
active data key — and seals the outbox bodies written in clear before bodies were sealed — one row per
transaction (:mod:`adapter.maintenance.rotation_jobs`), while the service
keeps serving.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy import func, not_, select, update
from sqlalchemy.engine import Engine

from adapter.audit.trail import Outcome
from adapter.maintenance.key_usage import ENCRYPTED, EncryptedColumn
from adapter.maintenance.rotation_jobs import (
    Progress,
    audit_run,
    compare_and_set,
    counted,
    read_page,
    run_batch,
    until_done,
)
from adapter.outbox.encoding import is_clear_body
from adapter.security.crypto import DecryptionError, FieldCipher, KeySource
from adapter.storage.db import table_of


def reencrypt(engine: Engine, keys: KeySource, *, batch_size: int = 500, agent: str = "system",
              progress: Progress | None = None) -> dict[str, int]:
    """Rewrites every encrypted value that is not ``v2`` under the active data key; returns counts per
    column plus ``failed`` (values that do not decrypt under any key held: left as they are).
    ``progress`` gets (values looked at, values to do) after every page."""
    cipher = FieldCipher(keys)
    counts: dict[str, int] = {"failed": 0}
    total = sum(_to_do(engine, cipher, spec) for spec in ENCRYPTED) if progress is not None else None
    done = [0]
    for spec in ENCRYPTED:
        failed: set[int] = set()
        counts[f"{table_of(spec.model).name}.{spec.column}"] = until_done(
            counted(partial(_reencrypt_page, engine, cipher, spec, failed, batch_size), progress, total, done),
            f"{table_of(spec.model).name}.{spec.column}")
        counts["failed"] += len(failed)
    rewritten = sum(v for k, v in counts.items() if k != "failed")
    audit_run(engine, "reencrypt", cipher.key_id, rewritten, agent,
           Outcome.SUCCESS if not counts["failed"] else Outcome.MINOR_FAILURE)
    return counts


def _stale(table: Any, spec: EncryptedColumn, cipher: FieldCipher) -> Any:
    value = table.c[spec.column]
    return value.is_not(None) & not_(value.like(f"v2.{cipher.key_id}.%"))


def _to_do(engine: Engine, cipher: FieldCipher, spec: EncryptedColumn) -> int:
    table = table_of(spec.model)
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)
                                      .where(_stale(table, spec, cipher))).scalar() or 0)


def _reencrypt_page(engine: Engine, cipher: FieldCipher, spec: EncryptedColumn, failed: set[int],
                    batch_size: int) -> tuple[int, int]:
    table = table_of(spec.model)
    value = table.c[spec.column]
    rows = read_page(engine, select(table).where(_stale(table, spec, cipher), table.c.id.not_in(failed))
                     .order_by(table.c.id).limit(batch_size))
    written = 0
    for row in rows:
        stored = getattr(row, spec.column)
        try:
            plain = stored if spec.clear_legacy and is_clear_body(stored) else \
                cipher.decrypt(stored, context=spec.context(row), legacy_context=spec.legacy_context(row))
        except DecryptionError:
            failed.add(row.id)
            continue
        fresh = cipher.encrypt(plain, context=spec.context(row))
        # One row per transaction: the job never holds a lock the service waits on for long, and never
        # two rows' locks at once (no deadlock with the service's own multi-row transactions).
        written += run_batch(engine, partial(compare_and_set, statement=update(table).where(
            table.c.id == row.id, value == stored).values({spec.column: fresh})))
    return len(rows), written
