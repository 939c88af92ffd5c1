"""Online key rotation (issue 6, "rotation of the data key and of the index key runs online"):
:func:`reencrypt` rewrites every value not under the active data key, :func:`reindex` recomputes every
blind index not under the active index key, :func:`key_usage` counts rows per key id.

Both jobs read pages of rows without locks and write each row (each number, for re-indexing) in its
own short transaction, while the service keeps serving: every write is a compare-and-set (``UPDATE
... WHERE id = ? AND col = <value read>``), so a concurrent writer wins and the row is looked at again
in the next pass. They loop until no row uses an old key, retry a batch after a lock conflict, and are
resumable and idempotent (a second run finds nothing to do). Each run records a ``key-rotation`` audit
entry (ids and counts, never key material or values).

Running instances on a keyring file switch to a newly active key within about a second
(:data:`adapter.security.keys.RECHECK_SECONDS`); ``bridge keys rotate`` waits that long before the job starts.

Blind indexes are recomputed from the value they index, decrypted from ``wa_contact.phone_enc``: a
number's ``outbox`` rows move first, then (second transaction) its ``action_request``, contact,
``conversation`` and ``recipient_pace`` rows, following the service's own lock order so the two never
deadlock; outbox rows of numbers no longer on file are re-indexed from ``outbox.recipient_enc``.
Lookups try every index key held, so rows are found whichever side of the move they are on. Business-
scoped user ids are stored only as an index, never in clear or encrypted: under an old key they are
cleared and re-learnt from the next status or message that carries them. Pacing and conversation rows
of numbers no longer on file cannot be re-indexed and are removed (nothing can reach them).

On SQLite (one instance, writers serialised in-process by :func:`adapter.storage.db.transaction`) run the jobs
from the service's process or with the service stopped: a second writer process makes the service's
read-then-write steps fail with "database is locked".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Column, Executable, delete, func, not_, select, update
from sqlalchemy.engine import CursorResult, Engine, Row
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.conversation.inbound import content_context
from adapter.conversation.tables import ActionRequest, Conversation, InboundMessage
from adapter.outbox.store import recipient_context
from adapter.outbox.tables import OutboxMessage, RecipientPace, WhatsAppStatus
from adapter.recipients.contacts import legacy_phone_context, phone_context
from adapter.recipients.tables import WhatsAppContact
from adapter.security.crypto import TAG_BYTES, BlindIndex, DecryptionError, FieldCipher, KeySource
from adapter.storage.db import insert_ignoring_duplicates, table_of, transaction, utcnow

T = TypeVar("T")
MAX_PASSES = 1000  # a writer still using an old key keeps rows coming back; give up rather than spin forever
RETRIES = 6
PACE_CAP = timedelta(seconds=6)  # Meta's pair rate limit: about one message per 6 s to one user


@dataclass(frozen=True)
class EncryptedColumn:
    model: type[SQLModel]
    column: str
    context: Callable[[Row[Any]], str]
    legacy_context: Callable[[Row[Any]], str | None] = lambda row: None


ENCRYPTED = (
    EncryptedColumn(WhatsAppContact, "phone_enc", lambda r: phone_context(r.patient_ref, r.phone_index),
                    lambda r: legacy_phone_context(r.patient_ref)),
    EncryptedColumn(OutboxMessage, "recipient_enc", lambda r: recipient_context(r.natural_key)),
    EncryptedColumn(InboundMessage, "content_enc", lambda r: content_context(r.wamid)),
)
# Every column holding a blind index (table model, column).
INDEXED: tuple[tuple[type[SQLModel], str], ...] = (
    (WhatsAppContact, "phone_index"), (WhatsAppContact, "user_id_index"), (Conversation, "phone_index"),
    (ActionRequest, "phone_index"), (RecipientPace, "recipient_key"), (OutboxMessage, "recipient_key"),
    (WhatsAppStatus, "user_id_index"))


def _batch(engine: Engine, work: Callable[[Session], T]) -> T:
    """Runs ``work`` in its own short transaction, again after a lock conflict with the running service
    (SQLite "database is locked", a PostgreSQL deadlock): every write here is idempotent."""
    for attempt in range(RETRIES):
        try:
            with transaction(engine) as session:
                return work(session)
        except OperationalError:
            if attempt == RETRIES - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def _page(engine: Engine, statement: Executable) -> list[Row[Any]]:
    """A page of rows to look at, read without locks (the writes re-check each row)."""
    with Session(engine) as session:
        return list(session.execute(statement).all())


def _changed(session: Session, statement: Executable) -> int:
    """Rows an UPDATE or DELETE changed (0 when a compare-and-set lost its race)."""
    result = session.execute(statement)
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def _compare_and_set(session: Session, *, statement: Executable) -> int:
    return _changed(session, statement)


def _audit(engine: Engine, job: str, key_id: str, rows: int, agent: str, outcome: Outcome) -> None:
    with transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.KEY_ROTATION, action=Action.UPDATE, outcome=outcome, agent=agent,
                                   detail={"job": job, "key_id": key_id, "rows": rows}))


def _old_tag(column: Column[Any], tag: bytes) -> Any:
    return column.is_not(None) & (func.substr(column, 1, TAG_BYTES) != tag)


def _until_done(step: Callable[[], tuple[int, int]], what: str) -> int:
    """Repeats ``step`` (returns rows seen, rows changed) until a page finds nothing left to do."""
    done = 0
    for _ in range(MAX_PASSES):
        seen, changed = step()
        done += changed
        if not seen:
            return done
        if not changed:
            time.sleep(0.05)  # every row lost its race: let the writer finish
    raise RuntimeError(f"{what}: rows under an old key keep coming back; is every instance using the new keys?")


def reencrypt(engine: Engine, keys: KeySource, *, batch_size: int = 500, agent: str = "system") -> dict[str, int]:
    """Rewrites every encrypted value that is not ``v2`` under the active data key; returns counts per
    column plus ``failed`` (values that do not decrypt under any key held: left as they are)."""
    cipher = FieldCipher(keys)
    counts: dict[str, int] = {"failed": 0}
    for spec in ENCRYPTED:
        failed: set[int] = set()
        counts[f"{table_of(spec.model).name}.{spec.column}"] = _until_done(
            partial(_reencrypt_page, engine, cipher, spec, failed, batch_size),
            f"{table_of(spec.model).name}.{spec.column}")
        counts["failed"] += len(failed)
    total = sum(v for k, v in counts.items() if k != "failed")
    _audit(engine, "reencrypt", cipher.key_id, total, agent,
           Outcome.SUCCESS if not counts["failed"] else Outcome.MINOR_FAILURE)
    return counts


def _reencrypt_page(engine: Engine, cipher: FieldCipher, spec: EncryptedColumn, failed: set[int],
                    batch_size: int) -> tuple[int, int]:
    table = table_of(spec.model)
    value = table.c[spec.column]
    rows = _page(engine, select(table).where(value.is_not(None), not_(value.like(f"v2.{cipher.key_id}.%")),
                                             table.c.id.not_in(failed)).order_by(table.c.id).limit(batch_size))
    written = 0
    for row in rows:
        stored = getattr(row, spec.column)
        try:
            plain = cipher.decrypt(stored, context=spec.context(row), legacy_context=spec.legacy_context(row))
        except DecryptionError:
            failed.add(row.id)
            continue
        fresh = cipher.encrypt(plain, context=spec.context(row))
        # One row per transaction: the job never holds a lock the service waits on for long, and never
        # two rows' locks at once (no deadlock with the service's own multi-row transactions).
        written += _batch(engine, partial(_compare_and_set, statement=update(table).where(
            table.c.id == row.id, value == stored).values({spec.column: fresh})))
    return len(rows), written


def reindex(engine: Engine, keys: KeySource, *, batch_size: int = 500, agent: str = "system") -> dict[str, int]:
    """Recomputes every blind index for the active index key; returns counts (see the module docstring)."""
    index, cipher = BlindIndex(keys), FieldCipher(keys)
    tag = bytes.fromhex(index.key_id)
    failed: set[int] = set()
    counts = {"contacts": _until_done(lambda: _reindex_contacts(engine, index, cipher, tag, failed, batch_size),
                                      "wa_contact.phone_index")}
    skipped: set[int] = set()
    counts["outbox"] = _until_done(lambda: _reindex_outbox(engine, index, cipher, tag, skipped, batch_size),
                                   "outbox.recipient_key")
    counts["user_ids_cleared"] = _batch(engine, lambda session: _clear_user_ids(session, tag))
    counts["orphans_removed"] = _batch(engine, lambda session: _remove_orphans(session, tag))
    counts["failed"] = len(failed)
    _audit(engine, "reindex", index.key_id, sum(counts.values()) - len(failed), agent,
           Outcome.SUCCESS if not failed else Outcome.MINOR_FAILURE)
    return counts


def _move_dependents(session: Session, olds: list[bytes], new: bytes) -> int:
    """First transaction of a number's move: its outbox rows. Outbox rows the
    service holds right now (a send being recorded) are skipped, not waited for: the service updates
    several outbox rows and pacing rows in one transaction, and waiting here while holding others
    could close a deadlock cycle. Skipped rows are picked up from their own ciphertext later."""
    outbox = table_of(OutboxMessage)
    free = session.execute(select(outbox.c.id).where(outbox.c.recipient_key.in_(olds)).order_by(outbox.c.id)
                           .with_for_update(skip_locked=True)).scalars().all()
    return _changed(session, update(outbox).where(outbox.c.id.in_(free), outbox.c.recipient_key.in_(olds))
                    .values(recipient_key=new)) if free else 0


def _move_contacts(session: Session, contacts: list[Row[Any]], olds: list[bytes], new: bytes,
                   phone: str, cipher: FieldCipher) -> int:
    """Second transaction: the number's action requests, contact rows, conversation and pacing rows, in
    the service's own lock order (action request or contact before conversation; pacing last), so
    neither side waits on the other in a cycle. A conversation or pacing row the service already made
    under ``new`` (it sends by the outbox rows' index, moved first) wins over the old one."""
    actions, contact = table_of(ActionRequest), table_of(WhatsAppContact)
    keyed: tuple[tuple[type[SQLModel], str], ...] = ((Conversation, "phone_index"), (RecipientPace, "recipient_key"))
    # Take every lock first, without waiting (PostgreSQL NOWAIT): a job that never waits while holding
    # a lock cannot be part of a deadlock cycle with the service's multi-row transactions. A row the
    # service holds makes this transaction give up; the number is tried again in the next pass.
    for table, column in ((actions, "phone_index"), (contact, "phone_index"),
                          *((table_of(model), column) for model, column in keyed)):
        session.execute(select(table.c[column]).where(table.c[column].in_([*olds, new]))
                        .with_for_update(nowait=True)).all()
    session.execute(update(actions).where(actions.c.phone_index.in_(olds)).values(phone_index=new))
    moved = 0
    for row in contacts:
        where = (contact.c.id == row.id, contact.c.phone_index == row.phone_index,
                 contact.c.phone_enc == row.phone_enc)
        clash = session.execute(select(contact.c.id).where(contact.c.patient_ref == row.patient_ref,
                                                           contact.c.phone_index == new)).first()
        if clash is not None:  # the patient already has this number under the new index
            moved += _changed(session, delete(contact).where(*where))
            continue
        moved += _changed(session, update(contact).where(*where).values(
            phone_index=new, user_id_index=None,  # user ids come back with the next status or message
            phone_enc=cipher.encrypt(phone, context=phone_context(row.patient_ref, new))))
    for model, column in keyed:
        table = table_of(model)
        old_row = session.execute(select(table).where(table.c[column].in_(olds))).first()
        if old_row is not None:  # insert-or-keep, never check-then-update: the service may insert it now
            moved_row = {**old_row._asdict(), column: new}
            if model is RecipientPace:
                moved_row["next_send_at"] = _capped(old_row.next_send_at)
            insert_ignoring_duplicates(session, model, [moved_row], column)
            session.execute(delete(table).where(table.c[column].in_(olds)))
    return moved


def _capped(next_send_at: datetime) -> datetime:
    """A pacing time as it moves to the new index: at most one pair interval ahead. The old row may
    hold a send's provisional lease time, which that send's outcome would have shortened, but the
    outcome may now be recorded under the old index: copied as is, it would park the number."""
    aware = next_send_at if next_send_at.tzinfo else next_send_at.replace(tzinfo=UTC)
    return min(aware, utcnow() + PACE_CAP)


def _reindex_contacts(engine: Engine, index: BlindIndex, cipher: FieldCipher, tag: bytes, failed: set[int],
                      batch_size: int) -> tuple[int, int]:
    """One page of contacts under an old index; each number (all its rows) moves in one transaction."""
    table = table_of(WhatsAppContact)
    rows = _page(engine, select(table).where(_old_tag(table.c.phone_index, tag), table.c.id.not_in(failed))
                 .order_by(table.c.id).limit(batch_size))
    by_number: dict[bytes, list[Row[Any]]] = {}
    for row in rows:
        by_number.setdefault(row.phone_index, []).append(row)
    moved = 0
    for group in by_number.values():
        try:
            first = group[0]
            phone = cipher.decrypt(first.phone_enc, context=phone_context(first.patient_ref, first.phone_index),
                                   legacy_context=legacy_phone_context(first.patient_ref))
        except DecryptionError:
            failed.update(row.id for row in group)
            continue
        new = index.phone(phone)
        olds = [old for old in index.phone_candidates(phone) if old != new]
        try:
            _batch(engine, partial(_move_dependents, olds=olds, new=new))
            moved += _batch(engine, partial(_move_contacts, contacts=group, olds=olds, new=new, phone=phone,
                                            cipher=cipher))
        except OperationalError:  # the service kept these rows busy: the next pass tries again
            continue
    return len(rows), moved


def _reindex_outbox(engine: Engine, index: BlindIndex, cipher: FieldCipher, tag: bytes, skipped: set[int],
                    batch_size: int) -> tuple[int, int]:
    """Outbox rows whose number is no longer a contact: their own ciphertext gives the number."""
    table = table_of(OutboxMessage)
    rows = _page(engine, select(table.c.id, table.c.natural_key, table.c.recipient_key, table.c.recipient_enc)
                 .where(_old_tag(table.c.recipient_key, tag), table.c.id.not_in(skipped))
                 .order_by(table.c.id).limit(batch_size))
    moved = 0
    for row in rows:
        try:
            phone = cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key))
        except DecryptionError:  # purged or unreadable: nothing to compute the index from
            skipped.add(row.id)
            continue
        moved += _batch(engine, partial(_compare_and_set, statement=update(table).where(
            table.c.id == row.id, table.c.recipient_key == row.recipient_key).values(recipient_key=index.phone(phone))))
    return len(rows), moved


def _clear_user_ids(session: Session, tag: bytes) -> int:
    cleared = 0
    for model in (WhatsAppContact, WhatsAppStatus):
        table = table_of(model)
        cleared += _changed(session, update(table).where(_old_tag(table.c.user_id_index, tag))
                            .values(user_id_index=None))
    return cleared


def _remove_orphans(session: Session, tag: bytes) -> int:
    """Pacing and conversation state of numbers no longer on file: unreachable once the old key goes."""
    removed = 0
    for model, column in ((RecipientPace, "recipient_key"), (Conversation, "phone_index")):
        table = table_of(model)
        removed += _changed(session, delete(table).where(_old_tag(table.c[column], tag)))
    return removed


def usage_by_column(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows per key id, per column: data key ids of encrypted values (``v1:`` marks the old format),
    index key ids (the 4-byte tag, in hex) of blind indexes."""
    usage: dict[str, dict[str, int]] = {}
    with Session(engine) as session:
        for spec in ENCRYPTED:
            table = table_of(spec.model)
            value = table.c[spec.column]
            head = func.substr(value, 1, 11)
            found = usage.setdefault(f"{table.name}.{spec.column}", {})
            for prefix, rows in session.execute(select(head, func.count()).where(value.is_not(None))
                                                .group_by(head)).all():
                version, _, key_id = str(prefix).partition(".")
                name = key_id if version == "v2" else f"v1:{key_id}"
                found[name] = found.get(name, 0) + int(rows)
        for model, column in INDEXED:
            table = table_of(model)
            head = func.substr(table.c[column], 1, TAG_BYTES)
            found = usage.setdefault(f"{table.name}.{column}", {})
            for prefix, rows in session.execute(select(head, func.count()).where(table.c[column].is_not(None))
                                                .group_by(head)).all():
                found[bytes(prefix).hex()] = found.get(bytes(prefix).hex(), 0) + int(rows)
    return usage


def key_usage(engine: Engine, known: Iterable[str] | None = None) -> dict[str, int]:
    """Rows per key id over every column. With ``known`` ids, any other id (an index made by an
    earlier version, untagged) is counted under ``"unknown"``."""
    names = set(known) if known is not None else None
    total: dict[str, int] = {}
    for column in usage_by_column(engine).values():
        for key_id, rows in column.items():
            name = key_id.removeprefix("v1:")
            if names is not None and name not in names:
                name = "unknown"
            total[name] = total.get(name, 0) + rows
    return total
