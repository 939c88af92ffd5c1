"""Inbound WhatsApp messages, processed after the webhook's 200.

Each stored message (once per Meta message id, so a repeated delivery has no second effect) is
read once, in a batch claimed with ``SKIP LOCKED``:

- the sender is found by number, or by business-scoped user id when Meta sent no number
  (https://developers.facebook.com/docs/whatsapp/cloud-api/business-scoped-user-ids); a message
  with both links the two;
- the message opens the 24-hour customer service window, from its own timestamp;
- ``user_changed_number`` moves the sender's contact rows and queued messages to the new number;
- STOP (and its equivalents, :mod:`mappings.conversation`) or a "Stop reminders" quick reply opts
  the patients out, suppresses what is queued for them and confirms once; START opts back in.

The content is stored encrypted until processed, then dropped: only the id, type, time and
outcome remain.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.action_tokens import resolve_action_token
from adapter.consent import OPTED_IN, OPTED_OUT, set_consent
from adapter.contacts import ContactBook, e164_from_wa_id
from adapter.crypto import FieldCipher
from adapter.db import transaction, utcnow
from adapter.models import ConsentRecord, InboundMessage, OutboxMessage, WhatsAppContact
from adapter.outbox import OutboxStore, recipient_context
from mappings.conversation import Conversation
from whatsapp.webhook import InboundMessage as ParsedInbound

log = logging.getLogger(__name__)
CHANGED_NUMBER = frozenset({"user_changed_number", "customer_changed_number"})


def content_context(wamid: str) -> str:
    return f"wa_inbound.content_enc:{wamid}"


@dataclass(frozen=True)
class InboundContent:
    """What processing needs from a message (never logged)."""

    from_id: str | None
    from_user_id: str | None
    type: str
    text: str | None = None
    payload: str | None = None  # quick-reply payload or interactive reply id
    context_id: str | None = None
    system_type: str | None = None
    new_wa_id: str | None = None
    new_user_id: str | None = None


def encode_content(cipher: FieldCipher, message: ParsedInbound) -> str:
    content = InboundContent(
        from_id=message.from_id, from_user_id=message.from_user_id, type=message.type, text=message.text,
        payload=message.button_payload or message.interactive_reply_id, context_id=message.context_message_id,
        system_type=message.system_type, new_wa_id=message.new_wa_id, new_user_id=message.new_user_id)
    return cipher.encrypt(json.dumps(asdict(content), ensure_ascii=False), context=content_context(message.message_id))


def decode_content(cipher: FieldCipher, row: InboundMessage) -> InboundContent:
    raw = json.loads(cipher.decrypt(row.content_enc or "", context=content_context(row.wamid)))
    return InboundContent(**raw)


class InboundProcessor:
    def __init__(self, engine: Engine, outbox: OutboxStore, conversation: Conversation, default_language: str) -> None:
        self.engine = engine
        self.outbox = outbox
        self.contacts: ContactBook = outbox.contacts
        self.conversation = conversation
        self.default_language = default_language

    def process_pending(self, limit: int = 200) -> int:
        """Processes up to ``limit`` stored messages in one transaction; returns how many."""
        with transaction(self.engine) as session:
            rows = list(session.exec(
                select(InboundMessage).where(col(InboundMessage.state) == "pending")
                .order_by(col(InboundMessage.id)).limit(limit).with_for_update(skip_locked=True)))
            for row in rows:
                try:
                    with session.begin_nested():  # one bad message must not block the others
                        row.outcome = self._process(session, row)
                        row.state = "done"
                except Exception as error:
                    log.exception("inbound message %s could not be processed", row.id)
                    row.outcome, row.state = f"error:{type(error).__name__}"[:32], "failed"
                row.processed_at, row.content_enc = utcnow(), None
                session.add(row)
            return len(rows)

    def _process(self, session: Session, row: InboundMessage) -> str:
        if row.content_enc is None:
            return "no_content"
        content = decode_content(self.contacts.cipher, row)
        contacts = self.contacts.find(session, phone=content.from_id, user_id=content.from_user_id)
        if not contacts:
            log.info("inbound message %s from a sender with no patient on file", row.id)
            return "unknown_sender"
        if content.from_id and content.from_user_id:
            self.contacts.link_user_id(session, contacts, content.from_user_id)
        self.contacts.record_inbound(session, contacts, datetime.fromtimestamp(row.meta_timestamp, UTC))
        if content.type == "system" and content.system_type in CHANGED_NUMBER and content.new_wa_id:
            self._change_number(session, contacts, content.new_wa_id, content.new_user_id)
            return "number_changed"
        if content.payload:
            return self._quick_reply(session, row, content, contacts)
        match = self.conversation.intent(content.text)
        if match is None:
            return "noted"
        patients = sorted({contact.patient_ref for contact in contacts})
        if match.intent == "stop":
            return self._stop(session, row, content, contacts, patients, match.language)
        return self._start(session, row, content, contacts, patients, match.language)

    def _quick_reply(self, session: Session, row: InboundMessage, content: InboundContent,
                     contacts: list[WhatsAppContact]) -> str:
        token = resolve_action_token(session, content.payload or "")
        if token is None:
            return "unknown_payload"
        if token.patient_ref not in {contact.patient_ref for contact in contacts}:
            # A payload of another patient's message, typed or forwarded: never act on it.
            log.warning("inbound message %s carried another patient's action token; refused", row.id)
            return "token_refused"
        if token.action == "stop":
            return self._stop(session, row, content, contacts, [token.patient_ref], self.default_language)
        return f"action:{token.action}"  # confirm/cancel/reschedule/talk_to_staff: the write-back feature

    def _stop(self, session: Session, row: InboundMessage, content: InboundContent,
              contacts: list[WhatsAppContact], patients: list[str], language: str) -> str:
        changed = [p for p in patients if _consent_of(session, p) != OPTED_OUT]
        for patient in changed:
            set_consent(session, patient, OPTED_OUT, "chat")
        suppressed = OutboxStore.suppress_queued(session, patients, "patient opted out (STOP)")
        log.info("STOP: %d patient(s) opted out, %d queued message(s) suppressed", len(changed), suppressed)
        if changed:  # confirm once: a second STOP changes nothing and says nothing
            self._reply(session, row, content, contacts, changed[0], "stopped", language)
            return "opted_out"
        return "already_opted_out"

    def _start(self, session: Session, row: InboundMessage, content: InboundContent,
               contacts: list[WhatsAppContact], patients: list[str], language: str) -> str:
        changed = [p for p in patients if _consent_of(session, p) != OPTED_IN]
        for patient in changed:
            set_consent(session, patient, OPTED_IN, "chat")
        if changed:
            self._reply(session, row, content, contacts, changed[0], "started", language)
            return "opted_in"
        return "already_opted_in"

    def _reply(self, session: Session, row: InboundMessage, content: InboundContent,
               contacts: list[WhatsAppContact], patient_ref: str, key: str, language: str) -> None:
        text, _ = self.conversation.text(key, language, self.default_language)
        recipient = e164_from_wa_id(content.from_id) if content.from_id else self.contacts.phone_of(contacts[0])
        self.outbox.enqueue_message(
            session, natural_key=f"consent:{row.wamid}", rule_id=f"consent.{key}", resource_ref=patient_ref,
            patient_ref=patient_ref, recipient=recipient, purpose="consent", due_at=utcnow(),
            message={"type": "text", "text": {"body": text, "preview_url": False}})

    def _change_number(self, session: Session, contacts: list[WhatsAppContact], new_number: str,
                       new_user_id: str | None) -> None:
        new_number = e164_from_wa_id(new_number)
        old_keys = {contact.phone_index for contact in contacts}
        patients = {contact.patient_ref for contact in contacts}
        self.contacts.change_number(session, contacts, new_number, new_user_id)
        new_key = self.contacts.index.phone(new_number)
        queued = session.exec(select(OutboxMessage).where(
            col(OutboxMessage.state) == "queued", col(OutboxMessage.recipient_key).in_(list(old_keys)),
            col(OutboxMessage.patient_ref).in_(list(patients))).with_for_update())
        for message in queued:
            message.recipient_enc = self.contacts.cipher.encrypt(
                new_number, context=recipient_context(message.natural_key))
            message.recipient_key, message.updated_at = new_key, utcnow()
            session.add(message)


def _consent_of(session: Session, patient_ref: str) -> str | None:
    record = session.get(ConsentRecord, patient_ref)
    return record.status if record else None
