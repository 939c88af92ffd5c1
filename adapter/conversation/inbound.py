"""Inbound WhatsApp messages, processed after the webhook's 200.

Each stored message (once per Meta message id, so a repeated delivery has no second effect) is
read once, in a batch claimed with ``SKIP LOCKED``:

- the sender is found by number, or by business-scoped user id when Meta sent no number
  (https://developers.facebook.com/docs/whatsapp/cloud-api/business-scoped-user-ids); a message
  with both links the two;
- the message opens the 24-hour customer service window, from its own timestamp but never from later
  than its receipt (:func:`adapter.recipients.contacts.written_at`);
- ``user_changed_number`` moves the sender's contact rows and queued messages to the new number;
- an emergency word, STOP or START is acted on whatever else holds
  (:mod:`adapter.conversation.commands`), even when the message arrives a day late;
- text that looked like a card number, an SSN or a password was redacted before it was stored
  (:mod:`adapter.conversation.content`); the patient is pointed to the portal;
- while staff have the conversation (a hand-off), the bot stays silent;
- a button resolves its opaque token (:mod:`adapter.conversation.taps`); "talk to staff" hands the
  conversation over;
- a menu row opens what it names (:mod:`adapter.conversation.menu`); "menu" in any language opens the
  menu; "STOP <topic>" stops that health-education topic (:mod:`adapter.conversation.tips`); other text is
  looked up in the hospital's approved answers (:mod:`adapter.conversation.answers`:
  the answer verbatim, a list of likely ones, or the menu with a person) — never a generated answer;
- the first message gets the welcome.

The content is stored encrypted until processed, then dropped: only the id, type, time and
outcome remain.

Audit: each processed message gets one ``inbound`` entry (agent ``patient``, entity
``message/<wamid>``, detail: message type and the outcome chosen, e.g. ``opted_out``, ``staff``,
``emergency``, ``sensitive``, ``answered``; the approved answer served as ``<entry>@<version>``; how
many queued messages a STOP suppressed; a health-education topic and its consent change; the kinds of
what was redacted) in the processing transaction, written once per batch. Never the text. The patient
is named when the sender maps to exactly one. A message that failed is recorded with outcome 8.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, DetailValue, Kind, Outcome, record
from adapter.conversation import answers, menu, tips
from adapter.conversation.chat import ChatPolicy, ChatReplies, in_handoff
from adapter.conversation.commands import emergency, handoff, start, stop
from adapter.conversation.content import decode_content
from adapter.conversation.front_desk import FIXED_ROWS
from adapter.conversation.tables import InboundMessage
from adapter.conversation.taps import tap
from adapter.conversation.turn import Turn
from adapter.outbox.encoding import recipient_context
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.contacts import SERVICE_WINDOW, ContactBook, e164_from_wa_id, written_at
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import transaction, utcnow

log = logging.getLogger(__name__)
CHANGED_NUMBER = frozenset({"user_changed_number", "customer_changed_number"})
# Outcomes after which a first-time sender also gets the welcome (not after STOP or an emergency).
WELCOMED_AFTER = frozenset({"menu", "staff", "confirm", "cancel_asked", "reschedule", "kept", "sensitive", "answered",
                            "choices", "unanswered", "questions", "departments", "department_open",
                            "department_closed", "appointments"})


@dataclass
class _AuditNote:
    """What processing learnt about one message that its audit entry reports (codes and counts only)."""

    patients: list[str] = field(default_factory=list)
    detail: dict[str, DetailValue] = field(default_factory=dict)

    def entry(self, row: InboundMessage, failed: bool) -> AuditEntry:
        detail: dict[str, DetailValue] = {"type": row.message_type, "outcome": row.outcome, **self.detail}
        if len(self.patients) > 1:
            detail["patients"] = len(self.patients)  # a shared number: which one is not known
        return AuditEntry(kind=Kind.INBOUND, action=Action.CREATE,
                          outcome=Outcome.SERIOUS_FAILURE if failed else Outcome.SUCCESS, agent="patient",
                          patient_ref=self.patients[0] if len(self.patients) == 1 else None,
                          entity_ref=f"message/{row.wamid}", detail=detail)


class InboundProcessor:
    def __init__(self, engine: Engine, replies: ChatReplies, policy: ChatPolicy | None = None) -> None:
        self.engine = engine
        self.replies = replies
        self.outbox = replies.outbox
        self.contacts: ContactBook = replies.contacts
        self.texts = replies.texts
        self.default_language = replies.default_language
        self.policy = policy or ChatPolicy()

    def process_pending(self, limit: int = 200) -> int:
        """Processes up to ``limit`` stored messages in one transaction; returns how many."""
        with transaction(self.engine) as session:
            rows = list(session.exec(
                select(InboundMessage).where(col(InboundMessage.state) == "pending")
                .order_by(col(InboundMessage.id)).limit(limit).with_for_update(skip_locked=True)))
            audit: list[AuditEntry] = []
            for row in rows:
                note = _AuditNote()
                try:
                    with session.begin_nested():  # one bad message must not block the others
                        row.outcome = self._process(session, row, note)
                        row.state = "done"
                except Exception as error:
                    log.exception("inbound message %s could not be processed", row.id)
                    row.outcome, row.state = f"error:{type(error).__name__}"[:32], "failed"
                row.processed_at, row.content_enc = utcnow(), None
                session.add(row)
                audit.append(note.entry(row, failed=row.state == "failed"))
            record(session, *audit)
            return len(rows)

    def _process(self, session: Session, row: InboundMessage, note: _AuditNote) -> str:
        if row.content_enc is None:
            return "no_content"
        content = decode_content(self.contacts.cipher, row)
        contacts = self.contacts.find(session, phone=content.from_id, user_id=content.from_user_id)
        if not contacts:
            log.info("inbound message %s from a sender with no patient on file", row.id)
            return "unknown_sender"
        note.patients = sorted({contact.patient_ref for contact in contacts})
        if content.sensitive:
            note.detail["redacted"] = ",".join(sorted(set(content.sensitive)))
        if content.from_id and content.from_user_id:
            self.contacts.link_user_id(session, contacts, content.from_user_id)
        written = written_at(row.meta_timestamp, row.received_at)
        self.contacts.record_inbound(session, contacts, written)
        if content.type == "system":
            if content.system_type in CHANGED_NUMBER and content.new_wa_id:
                self._change_number(session, contacts, content.new_wa_id, content.new_user_id)
                return "number_changed"
            return "system"
        turn = Turn(self.replies, self.policy, session, row, content, contacts)
        # Delivered a day late (Meta retried, or we were down): too late to chat about it, but a STOP,
        # START or an emergency still counts.
        late = utcnow() - written >= SERVICE_WINDOW
        if late and (not turn.match or turn.match.intent not in ("stop", "start", "emergency")):
            return "too_old"
        outcome = _route(turn)
        if turn.suppressed:
            note.detail["suppressed"] = turn.suppressed
        note.detail.update(turn.audit_detail)
        if outcome in WELCOMED_AFTER and turn.conversation.welcomed_at is None:
            turn.welcome()
        return outcome

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


def _route(turn: Turn) -> str:
    """What the message asks for, in order: an emergency, STOP/START, redacted text, a hand-off in
    progress (silence), a menu row or a tap, staff, the menu, a question, else the menu."""
    intent = turn.match.intent if turn.match else None
    if intent == "emergency":
        return emergency(turn)
    if intent in ("stop", "start"):
        return stop(turn, turn.patients) if intent == "stop" else start(turn)
    if turn.content.sensitive:
        turn.say("sensitive")
        return "sensitive"
    if in_handoff(turn.conversation, utcnow()):
        turn.request("handoff_check", turn.patients[0])
        return "handoff_silent"
    if turn.content.payload:
        if turn.content.payload.startswith(FIXED_ROWS):
            return menu.choose(turn, turn.content.payload)
        return tap(turn, turn.content.payload)
    if intent == "staff":
        return handoff(turn, turn.patients[0], None)
    if intent is None and turn.content.text:
        topic = tips.stop_request(turn, turn.content.text)  # "STOP DIABETES": that topic only
        return tips.stop_topic(turn, topic, turn.patients) if topic else answers.question(turn, turn.content.text)
    turn.menu()
    return "menu"
