"""WhatsApp contacts: which patients a number (or a business-scoped user id) belongs to, and that
user's 24-hour customer service window.

Numbers are stored encrypted and found by a keyed blind index (:class:`adapter.security.crypto.BlindIndex`).
Lookups try the number's index under every index key held, so rows not yet re-indexed during a key
rotation are still found (``bridge keys reindex``). The ciphertext's associated data binds the table,
the column and the row (patient reference AND number index): two numbers of one patient cannot swap.
The window follows Meta's rule: free-form messages may be sent for 24 hours after the user's last
message, measured from that message's own timestamp
(https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows),
but never from a time after it reached us (:func:`written_at`): a skewed or future timestamp, signed or
not, must not keep the window open beyond 24 hours after the receipt.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from adapter.recipients.tables import WhatsAppContact
from adapter.security.crypto import BlindIndex, FieldCipher
from adapter.storage.db import utcnow

SERVICE_WINDOW = timedelta(hours=24)


def phone_context(patient_ref: str, phone_index: bytes) -> str:
    """Associated data of ``wa_contact.phone_enc``: the row is (patient, number index)."""
    return f"wa_contact.phone_enc:{patient_ref}:{phone_index.hex()}"


def legacy_phone_context(patient_ref: str) -> str:
    """What ``v1`` values were bound to (patient only); ``bridge keys reencrypt`` rewrites them."""
    return f"wa_contact.phone_enc:{patient_ref}"


def e164_from_wa_id(wa_id: str) -> str:
    """Meta's ``wa_id`` is the number's digits with the country code: E.164 without the plus."""
    return "+" + "".join(ch for ch in wa_id if ch.isdigit())


def written_at(meta_timestamp: int | None, received_at: datetime) -> datetime:
    """When the user wrote, for the window: the message's own timestamp (Unix seconds), never later than
    ``received_at`` (when the webhook reached us), which stands in when the timestamp is absent or not a
    time (below zero or past 32 bits)."""
    if meta_timestamp is None or not 0 <= meta_timestamp < 2**31:
        return received_at
    return min(datetime.fromtimestamp(meta_timestamp, UTC), received_at)


def window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    return last_inbound_at is not None and now - last_inbound_at < SERVICE_WINDOW


class ContactBook:
    def __init__(self, index: BlindIndex, cipher: FieldCipher) -> None:
        self.index = index
        self.cipher = cipher

    def remember(self, session: Session, patient_ref: str, e164: str) -> bytes:
        """Records that ``patient_ref`` is messaged at ``e164``; returns the number's index as stored."""
        rows = list(session.exec(select(WhatsAppContact).where(
            col(WhatsAppContact.phone_index).in_(self.index.phone_candidates(e164)))))
        key, new = self.remember_among(rows, patient_ref, e164)
        if new is not None:
            session.add(new)
        return key

    def remember_among(self, known: list[WhatsAppContact], patient_ref: str,
                       e164: str) -> tuple[bytes, WhatsAppContact | None]:
        """The number's index for this patient among ``known`` contacts (those a batch read at once for
        all its numbers), and the new contact row to store when the patient is not yet on file at it.

        During an index rotation a number already on file keeps the index its rows have (re-indexing
        moves them all together), so one number never has rows under two indexes."""
        candidates = self.index.phone_candidates(e164)
        rows = [row for row in known if row.phone_index in candidates]
        if any(row.patient_ref == patient_ref for row in rows):
            return next(row.phone_index for row in rows if row.patient_ref == patient_ref), None
        key = rows[0].phone_index if rows else self.index.phone(e164)
        return key, WhatsAppContact(patient_ref=patient_ref, phone_index=key, updated_at=utcnow(),
                                    phone_enc=self.cipher.encrypt(e164, context=phone_context(patient_ref, key)))

    def find(self, session: Session, *, phone: str | None = None, user_id: str | None = None) -> list[WhatsAppContact]:
        """Every contact row of the sender: by number when Meta gave one, else by user id."""
        if phone:
            rows = list(session.exec(select(WhatsAppContact)
                                     .where(col(WhatsAppContact.phone_index).in_(self.index.phone_candidates(phone)))
                                     .with_for_update()))
            if rows:
                return rows
        if user_id:
            return list(session.exec(select(WhatsAppContact)
                                     .where(col(WhatsAppContact.user_id_index).in_(
                                         self.index.user_id_candidates(user_id)))
                                     .with_for_update()))
        return []

    def phone_of(self, contact: WhatsAppContact) -> str:
        return self.cipher.decrypt(contact.phone_enc, context=phone_context(contact.patient_ref, contact.phone_index),
                                   legacy_context=legacy_phone_context(contact.patient_ref))

    @staticmethod
    def record_inbound(session: Session, contacts: Iterable[WhatsAppContact], at: datetime) -> None:
        """The user wrote at ``at`` (:func:`written_at`): the window runs 24 h from the latest one. A time
        later than now is taken as now: no window runs from the future."""
        now = utcnow()
        at = min(at, now)
        for contact in contacts:
            if contact.last_inbound_at is None or contact.last_inbound_at < at:
                contact.last_inbound_at, contact.updated_at = at, now
                session.add(contact)

    def link_user_id(self, session: Session, contacts: Iterable[WhatsAppContact], user_id: str) -> None:
        key, known = self.index.user_id(user_id), self.index.user_id_candidates(user_id)
        for contact in contacts:
            if contact.user_id_index not in known:
                contact.user_id_index, contact.updated_at = key, utcnow()
                session.add(contact)

    def change_number(self, session: Session, contacts: Iterable[WhatsAppContact], new_number: str,
                      new_user_id: str | None) -> list[WhatsAppContact]:
        """The user moved to a new number (Meta's ``user_changed_number``): their rows follow it."""
        key = self.index.phone(new_number)
        moved = []
        for contact in contacts:
            clash = session.exec(select(WhatsAppContact).where(col(WhatsAppContact.patient_ref) == contact.patient_ref,
                                                               col(WhatsAppContact.phone_index).in_(
                                                                   self.index.phone_candidates(new_number)))).first()
            if clash is not None and clash.id != contact.id:
                session.delete(contact)  # the patient already has the new number on file
                continue
            contact.phone_index = key
            contact.phone_enc = self.cipher.encrypt(new_number, context=phone_context(contact.patient_ref, key))
            contact.user_id_index = self.index.user_id(new_user_id) if new_user_id else None
            contact.updated_at = utcnow()
            session.add(contact)
            moved.append(contact)
        return moved

    @staticmethod
    def last_inbound(session: Session, keys: Iterable[bytes]) -> dict[bytes, datetime]:
        """The latest inbound time per number index (for the window check of a batch of sends)."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        rows = session.exec(select(WhatsAppContact.phone_index, func.max(WhatsAppContact.last_inbound_at))
                            .where(col(WhatsAppContact.phone_index).in_(wanted))
                            .group_by(col(WhatsAppContact.phone_index))).all()
        return {key: at for key, at in rows if at is not None}
