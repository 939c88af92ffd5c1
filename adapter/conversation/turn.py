"""One inbound message being answered: who sent it, the language to answer in, and how its replies
and its requests for the EHR are queued in the processing transaction.

Replies go to the outbox through :class:`~adapter.conversation.chat.ChatReplies`, keyed by the
message id (``reply:<wamid>:<n>``, effectively-once). The language is the one the patient writes
in, else the one their notifications were sent in (:func:`adapter.outbox.store.notified_language`).
Work that needs the EHR becomes an :class:`~adapter.conversation.tables.ActionRequest`, keyed by
its kind and the message id, carried out afterwards (:mod:`adapter.conversation.actions`).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from adapter.audit.trail import DetailValue
from adapter.conversation.chat import ChatPolicy, ChatReplies, conversation_of
from adapter.conversation.content import InboundContent
from adapter.conversation.tables import ActionRequest, InboundMessage
from adapter.outbox.action_tokens import mint_action_token
from adapter.outbox.store import notified_language
from adapter.recipients.contacts import e164_from_wa_id
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import utcnow
from whatsapp.interactive import text_message


class Turn:
    """One inbound message, being answered."""

    def __init__(self, replies: ChatReplies, policy: ChatPolicy, session: Session, row: InboundMessage,
                 content: InboundContent, contacts: list[WhatsAppContact]) -> None:
        self.replies = replies
        self.texts = replies.texts
        self.default_language = replies.default_language
        self.policy = policy
        self.session = session
        self.row = row
        self.content = content
        self.contacts = contacts
        self.patients = sorted({contact.patient_ref for contact in contacts})
        self.phone_index = contacts[0].phone_index
        self.conversation = conversation_of(session, self.phone_index)
        self.recipient = (e164_from_wa_id(content.from_id) if content.from_id
                          else replies.contacts.phone_of(contacts[0]))
        self.match = replies.texts.classify(content.text) if content.text else None
        # The language the patient writes in, else the one their notifications were sent in; a word of
        # several languages ("no", "menú"/"menu") keeps the patient's own language when it is one of them.
        notified = notified_language(session, self.phone_index, replies.default_language)
        self.language = notified
        if self.match and notified not in replies.texts.languages_of(content.text):
            self.language = self.match.language
        self._replies = 0
        self.suppressed = 0  # queued messages a STOP suppressed (reported in the audit entry)
        self.audit_detail: dict[str, DetailValue] = {}  # codes for the message's audit entry (an answer served)

    def next_reply_key(self) -> str:
        self._replies += 1
        return f"reply:{self.row.wamid}:{self._replies}"

    def say(self, key: str, **values: str) -> None:
        self.replies.say(self.session, natural_key=self.next_reply_key(), patient_ref=self.patients[0],
                         recipient=self.recipient, key=key, language=self.language, **values)

    def send(self, message: dict[str, Any], purpose: str = "reply") -> None:
        self.replies.send(self.session, natural_key=self.next_reply_key(), patient_ref=self.patients[0],
                          recipient=self.recipient, message=message, language=self.language, purpose=purpose)

    def welcome(self) -> None:
        text, used = self.texts.render("welcome", self.language, self.default_language)
        # Before this message's own reply: the welcome explains what follows.
        self.replies.send(self.session, natural_key=f"welcome:{self.phone_index.hex()}",
                          patient_ref=self.patients[0], recipient=self.recipient, message=text_message(text),
                          language=used, first=True)
        self.conversation.welcomed_at = utcnow()
        self.session.add(self.conversation)

    def menu(self, body: str = "menu") -> None:
        self.replies.menu(self.session, natural_key=self.next_reply_key(), patient_ref=self.patients[0],
                          recipient=self.recipient, language=self.language, body=body)

    def mint(self, action: str, patient_ref: str, resource_ref: str, version_id: str | None,
             detail: str | None = None) -> str:
        return mint_action_token(self.session, action=action, patient_ref=patient_ref, resource_ref=resource_ref,
                                 version_id=version_id, detail=detail)

    def request(self, kind: str, patient_ref: str, *, resource_ref: str | None = None, version_id: str | None = None,
                slot_ref: str | None = None, urgent: bool = False, reason: str | None = None) -> None:
        now = utcnow()
        self.session.add(ActionRequest(
            dedupe_key=f"{kind}:{self.row.wamid}", kind=kind, patient_ref=patient_ref, resource_ref=resource_ref,
            version_id=version_id, slot_ref=slot_ref, phone_index=self.phone_index, language=self.language,
            urgent=urgent, next_attempt_at=now, outcome=reason, created_at=now))
