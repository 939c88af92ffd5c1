"""Online rotation of the index key: :func:`reindex` recomputes every blind index not under the
active index key while the service keeps serving (:mod:`adapter.maintenance.rotation_jobs`).

Blind indexes are recomputed from the value they index, decrypted from ``wa_contact.phone_enc``: a
number's ``outbox`` rows move first, then (second transaction) its ``action_request``, contact,
``conversation`` and ``recipient_pace`` rows, following the service's own lock order so the two never
deadlock; outbox rows of numbers no longer on file are re-indexed from ``outbox.recipient_enc``.
Lookups try every index key held, so rows are found whichever side of the move they are on. Business-
scoped user ids are stored only as an index, never in clear or encrypted: under an old key they are
cleared and re-learnt from the next status or message that carries them. Pacing and conversation rows
of numbers no longer on file cannot be re-indexed and are removed (nothing can reach them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel

from adapter.audit.trail import Outcome
from adapter.conversation.tables import ActionRequest, Conversation
from adapter.maintenance.rotation_jobs import (
    Progress,
    audit_run,
    changed_rows,
    compare_and_set,
    counted,
    old_tag,
    read_page,
    run_batch,
    until_done,
)
from adapter.outbox.encoding import recipient_context
from adapter.outbox.tables import OutboxMessage, RecipientPace, WhatsAppStatus
from adapter.recipients.contacts import legacy_phone_context, phone_context
from adapter.recipients.tables import WhatsAppContact
from adapter.security.crypto import BlindIndex, DecryptionError, FieldCipher, KeySource
from adapter.storage.db import insert_ignoring_duplicates, table_of, utcnow

PACE_CAP = timedelta(seconds=6)  # Meta's pair rate limit: about one message per 6 s to one user


def reindex(engine: Engine, keys: KeySource, *, batch_size: int = 500, agent: str = "system",
            progress: Progress | None = None) -> dict[str, int]:
    """Recomputes every blind index for the active index key; returns counts (see the module docstring).
    ``progress`` gets (rows looked at, None) after every page: a moved number moves several rows, so
    there is no total to show."""
    index, cipher = BlindIndex(keys), FieldCipher(keys)
    tag = bytes.fromhex(index.key_id)
    failed: set[int] = set()
    done = [0]
    counts = {"contacts": until_done(counted(lambda: _reindex_contacts(engine, index, cipher, tag, failed,
                                                                       batch_size), progress, None, done),
                                      "wa_contact.phone_index")}
    skipped: set[int] = set()
    counts["outbox"] = until_done(counted(lambda: _reindex_outbox(engine, index, cipher, tag, skipped, batch_size),
                                          progress, None, done), "outbox.recipient_key")
    counts["user_ids_cleared"] = run_batch(engine, lambda session: _clear_user_ids(session, tag))
    counts["orphans_removed"] = run_batch(engine, lambda session: _remove_orphans(session, tag))
    counts["failed"] = len(failed)
    audit_run(engine, "reindex", index.key_id, sum(counts.values()) - len(failed), agent,
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
    return changed_rows(session, update(outbox).where(outbox.c.id.in_(free), outbox.c.recipient_key.in_(olds))
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
            moved += changed_rows(session, delete(contact).where(*where))
            continue
        moved += changed_rows(session, update(contact).where(*where).values(
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
    rows = read_page(engine, select(table).where(old_tag(table.c.phone_index, tag), table.c.id.not_in(failed))
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
            run_batch(engine, partial(_move_dependents, olds=olds, new=new))
            moved += run_batch(engine, partial(_move_contacts, contacts=group, olds=olds, new=new, phone=phone,
                                            cipher=cipher))
        except OperationalError:  # the service kept these rows busy: the next pass tries again
            continue
    return len(rows), moved


def _reindex_outbox(engine: Engine, index: BlindIndex, cipher: FieldCipher, tag: bytes, skipped: set[int],
                    batch_size: int) -> tuple[int, int]:
    """Outbox rows whose number is no longer a contact: their own ciphertext gives the number."""
    table = table_of(OutboxMessage)
    rows = read_page(engine, select(table.c.id, table.c.natural_key, table.c.recipient_key, table.c.recipient_enc)
                 .where(old_tag(table.c.recipient_key, tag), table.c.id.not_in(skipped))
                 .order_by(table.c.id).limit(batch_size))
    moved = 0
    for row in rows:
        try:
            phone = cipher.decrypt(row.recipient_enc or "", context=recipient_context(row.natural_key))
        except DecryptionError:  # purged or unreadable: nothing to compute the index from
            skipped.add(row.id)
            continue
        moved += run_batch(engine, partial(compare_and_set, statement=update(table).where(
            table.c.id == row.id, table.c.recipient_key == row.recipient_key).values(recipient_key=index.phone(phone))))
    return len(rows), moved


def _clear_user_ids(session: Session, tag: bytes) -> int:
    cleared = 0
    for model in (WhatsAppContact, WhatsAppStatus):
        table = table_of(model)
        cleared += changed_rows(session, update(table).where(old_tag(table.c.user_id_index, tag))
                            .values(user_id_index=None))
    return cleared


def _remove_orphans(session: Session, tag: bytes) -> int:
    """Pacing and conversation state of numbers no longer on file: unreachable once the old key goes."""
    removed = 0
    for model, column in ((RecipientPace, "recipient_key"), (Conversation, "phone_index")):
        table = table_of(model)
        removed += changed_rows(session, delete(table).where(old_tag(table.c[column], tag)))
    return removed
