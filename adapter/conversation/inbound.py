"""Inbound WhatsApp messages, processed after the webhook's 200.

Each stored message (once per Meta message id, so a repeated delivery has no second effect) is
read once, in a batch claimed with ``SKIP LOCKED``:

- the sender is found by number, or by business-scoped user id when Meta sent no number
  (https://developers.facebook.com/docs/whatsapp/cloud-api/business-scoped-user-ids); a message
  with both links the two;
- the message opens the 24-hour customer service window, from its own timestamp;
- ``user_changed_number`` moves the sender's contact rows and queued messages to the new number;
- an emergency word gets the emergency reply at once and an urgent hand-off, whatever else holds;
- STOP (and its equivalents, :mod:`mappings.conversation`) or a "Stop reminders" quick reply opts
  the patients out, suppresses what is queued for them and confirms once; START opts back in;
- text that looked like a card number, an SSN or a password was redacted before it was stored
  (:mod:`mappings.redact`); the patient is pointed to the portal;
- while staff have the conversation (a hand-off), the bot stays silent;
- a button resolves its opaque token: another patient's token is refused and recorded, an expired
  or used one changes nothing; confirm, cancel (after "are you sure?") and reschedule become
  :class:`~adapter.conversation.tables.ActionRequest` rows that the pipeline carries out against the EHR
  (:mod:`adapter.conversation.actions`); "talk to staff" hands the conversation over;
- the first message gets the welcome; anything not understood gets a short menu, never an answer
  about health.

The content is stored encrypted until processed, then dropped: only the id, type, time and
outcome remain.

Audit: each processed message gets one ``inbound`` entry (agent ``patient``, entity
``message/<wamid>``, detail: message type and the outcome chosen, e.g. ``opted_out``, ``staff``,
``emergency``, ``sensitive``; how many queued messages a STOP suppressed; the kinds of what was
redacted) in the processing transaction, written once per batch. Never the text. The patient is
named when the sender maps to exactly one. A message that failed is recorded with outcome 8.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, DetailValue, Kind, Outcome, record
from adapter.conversation.chat import ChatReplies, conversation_of, in_handoff, notified_language, start_handoff
from adapter.conversation.tables import ActionRequest, InboundMessage
from adapter.outbox.action_tokens import mint_action_token, resolve_action_token
from adapter.outbox.store import OutboxStore, recipient_context
from adapter.outbox.tables import ActionToken, OutboxMessage
from adapter.recipients.consent import OPTED_IN, OPTED_OUT, set_consent
from adapter.recipients.contacts import SERVICE_WINDOW, ContactBook, e164_from_wa_id
from adapter.recipients.tables import ConsentRecord, WhatsAppContact
from adapter.scheduling import survey
from adapter.scheduling.reminders import cancel_pending
from adapter.security.crypto import FieldCipher
from adapter.storage.db import transaction, utcnow
from mappings.kinds import local_time_text
from mappings.redact import redact
from whatsapp.interactive import reply_buttons, text_message
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
    sensitive: tuple[str, ...] = ()  # kinds of what was redacted before storing ("card", "ssn", …)


def encode_content(cipher: FieldCipher, message: ParsedInbound) -> str:
    """The message as stored: encrypted, and with card numbers, SSNs and passwords already removed
    (they never reach the database, in any form)."""
    text, found = redact(message.text) if message.text else (message.text, [])
    content = InboundContent(
        from_id=message.from_id, from_user_id=message.from_user_id, type=message.type, text=text,
        payload=message.button_payload or message.interactive_reply_id, context_id=message.context_message_id,
        system_type=message.system_type, new_wa_id=message.new_wa_id, new_user_id=message.new_user_id,
        sensitive=tuple(found))
    return cipher.encrypt(json.dumps(asdict(content), ensure_ascii=False), context=content_context(message.message_id))


def decode_content(cipher: FieldCipher, row: InboundMessage) -> InboundContent:
    raw = json.loads(cipher.decrypt(row.content_enc or "", context=content_context(row.wamid)))
    raw["sensitive"] = tuple(raw.get("sensitive") or ())
    return InboundContent(**raw)


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


@dataclass(frozen=True)
class ChatPolicy:
    """Settings of the conversation: how long staff keep a conversation, and their opening hours."""

    handoff_timeout: timedelta = timedelta(hours=24)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    opens: time = time(8, 0)
    closes: time = time(17, 0)
    workdays: frozenset[int] = frozenset(range(5))  # Monday = 0
    remind_after_confirm: bool = False  # setting: a Confirm tap cancels queued reminders unless True


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
        self.contacts.record_inbound(session, contacts, datetime.fromtimestamp(row.meta_timestamp, UTC))
        if content.type == "system":
            if content.system_type in CHANGED_NUMBER and content.new_wa_id:
                self._change_number(session, contacts, content.new_wa_id, content.new_user_id)
                return "number_changed"
            return "system"
        chat = _Chat(self, session, row, content, contacts)
        # Delivered a day late (Meta retried, or we were down): too late to chat about it, but a STOP,
        # START or an emergency still counts.
        late = utcnow() - datetime.fromtimestamp(row.meta_timestamp, UTC) >= SERVICE_WINDOW
        if late and (not chat.match or chat.match.intent not in ("stop", "start", "emergency")):
            return "too_old"
        outcome = chat.route()
        if chat.suppressed:
            note.detail["suppressed"] = chat.suppressed
        if outcome in WELCOMED_AFTER and chat.conversation.welcomed_at is None:
            chat.welcome()
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

    def staff_when(self, language: str) -> str:
        """When staff will answer, in words: later today, or the next working day."""
        now = utcnow().astimezone(self.policy.zone)
        if now.weekday() in self.policy.workdays and now.time() < self.policy.closes:
            closing = now.replace(hour=self.policy.closes.hour, minute=self.policy.closes.minute)
            return self.texts.render("when_today", language, self.default_language,
                                     time=local_time_text(closing, language))[0]
        day = now + timedelta(days=1)
        while day.weekday() not in self.policy.workdays:
            day += timedelta(days=1)
        opening = day.replace(hour=self.policy.opens.hour, minute=self.policy.opens.minute)
        return self.texts.render("when_next_day", language, self.default_language,
                                 time=local_time_text(opening, language))[0]


# Outcomes after which a first-time sender also gets the welcome (not after STOP or an emergency).
WELCOMED_AFTER = frozenset({"menu", "staff", "confirm", "cancel_asked", "reschedule", "kept", "sensitive"})


class _Chat:
    """One inbound message, being answered."""

    def __init__(self, processor: InboundProcessor, session: Session, row: InboundMessage, content: InboundContent,
                 contacts: list[WhatsAppContact]) -> None:
        self.p = processor
        self.session = session
        self.row = row
        self.content = content
        self.contacts = contacts
        self.patients = sorted({contact.patient_ref for contact in contacts})
        self.phone_index = contacts[0].phone_index
        self.conversation = conversation_of(session, self.phone_index)
        self.recipient = (e164_from_wa_id(content.from_id) if content.from_id
                          else processor.contacts.phone_of(contacts[0]))
        self.match = processor.texts.classify(content.text) if content.text else None
        # The language the patient writes in, else the one their notifications were sent in.
        self.language = self.match.language if self.match else notified_language(
            session, self.phone_index, processor.default_language)
        self._replies = 0
        self.suppressed = 0  # queued messages a STOP suppressed (reported in the audit entry)

    # --- routing

    def route(self) -> str:
        intent = self.match.intent if self.match else None
        if intent == "emergency":
            return self.emergency()
        if intent in ("stop", "start"):
            return self.stop(self.patients) if intent == "stop" else self.start()
        if self.content.sensitive:
            self.say("sensitive")
            return "sensitive"
        if in_handoff(self.conversation, utcnow()):
            self.request("handoff_check", self.patients[0])
            return "handoff_silent"
        if self.content.payload:
            return self.tap(self.content.payload)
        if intent == "staff":
            return self.handoff(self.patients[0], None)
        self.menu()
        return "menu"

    # --- replies

    def say(self, key: str, **values: str) -> None:
        self._replies += 1
        self.p.replies.say(self.session, natural_key=f"reply:{self.row.wamid}:{self._replies}",
                           patient_ref=self.patients[0], recipient=self.recipient, key=key, language=self.language,
                           **values)

    def send(self, message: dict[str, Any], purpose: str = "reply") -> None:
        self._replies += 1
        self.p.replies.send(self.session, natural_key=f"reply:{self.row.wamid}:{self._replies}",
                            patient_ref=self.patients[0], recipient=self.recipient, message=message,
                            language=self.language, purpose=purpose)

    def welcome(self) -> None:
        text, used = self.p.texts.render("welcome", self.language, self.p.default_language)
        # Before this message's own reply: the welcome explains what follows.
        self.p.replies.send(self.session, natural_key=f"welcome:{self.phone_index.hex()}",
                            patient_ref=self.patients[0], recipient=self.recipient, message=text_message(text),
                            language=used, due_at=utcnow() - timedelta(seconds=1))
        self.conversation.welcomed_at = utcnow()
        self.session.add(self.conversation)

    def menu(self) -> None:
        self._replies += 1
        self.p.replies.menu(self.session, natural_key=f"reply:{self.row.wamid}:{self._replies}",
                            patient_ref=self.patients[0], recipient=self.recipient, language=self.language)

    def mint(self, action: str, patient_ref: str, resource_ref: str, version_id: str | None,
             detail: str | None = None) -> str:
        return mint_action_token(self.session, action=action, patient_ref=patient_ref, resource_ref=resource_ref,
                                 version_id=version_id, detail=detail)

    # --- what the patient asked for

    def emergency(self) -> str:
        self._replies += 1
        self.p.replies.say(self.session, natural_key=f"reply:{self.row.wamid}:{self._replies}",
                           patient_ref=self.patients[0], recipient=self.recipient, key="emergency",
                           language=self.language, purpose="urgent")
        self.request("handoff", self.patients[0], urgent=True, reason="emergency-word")
        start_handoff(self.session, self.conversation, None, self.p.policy.handoff_timeout,
                      patient_ref=self.patients[0], agent="patient", reason="emergency-word", urgent=True)
        return "emergency"

    def handoff(self, patient_ref: str, focus_ref: str | None) -> str:
        self.request("handoff", patient_ref, resource_ref=focus_ref, reason="patient-asked-for-staff")
        start_handoff(self.session, self.conversation, None, self.p.policy.handoff_timeout,
                      patient_ref=patient_ref, agent="patient", reason="patient-asked-for-staff")
        self.say("staff_ack", when=self.p.staff_when(self.language))
        return "staff"

    def request(self, kind: str, patient_ref: str, *, resource_ref: str | None = None, version_id: str | None = None,
                slot_ref: str | None = None, urgent: bool = False, reason: str | None = None) -> None:
        now = utcnow()
        self.session.add(ActionRequest(
            dedupe_key=f"{kind}:{self.row.wamid}", kind=kind, patient_ref=patient_ref, resource_ref=resource_ref,
            version_id=version_id, slot_ref=slot_ref, phone_index=self.phone_index, language=self.language,
            urgent=urgent, next_attempt_at=now, outcome=reason, created_at=now))

    def tap(self, payload: str) -> str:
        token = resolve_action_token(self.session, payload)
        if token is None:
            self.menu()
            return "unknown_payload"
        if token.patient_ref not in self.patients:
            # A payload of another patient's message, typed or forwarded: never act on it.
            log.warning("inbound message %s carried another patient's action token; refused", self.row.id)
            return "token_refused"
        if token.expires_at < utcnow():
            self.say("expired")
            return "token_expired"
        if token.action == "stop":
            return self.stop([token.patient_ref])
        if token.action == "talk_to_staff":
            return self.handoff(token.patient_ref, token.resource_ref if token.resource_ref != token.patient_ref
                                else None)
        if token.used_at is not None:  # a replayed tap: already done, nothing to do again
            self.say("already")
            return "token_replayed"
        return self.appointment_action(token)

    def appointment_action(self, token: ActionToken) -> str:
        action = token.action
        if action in (survey.OPEN, survey.ANSWER):
            return self.survey_tap(token)
        if action in ("confirm", "cancel_confirmed", "keep", "pick_slot"):
            token.used_at = utcnow()
            self.session.add(token)
        if action == "keep":
            self.say("kept")
            return "kept"
        if action == "cancel":
            self.ask_cancel(token)
            return "cancel_asked"
        kind = {"confirm": "confirm", "cancel_confirmed": "cancel", "reschedule": "reschedule_offer",
                "pick_slot": "reschedule_pick"}.get(action)
        if kind is None:
            return f"action:{action}"
        self.request(kind, token.patient_ref, resource_ref=token.resource_ref, version_id=token.version_id,
                     slot_ref=token.detail)
        if kind == "confirm" and not self.p.policy.remind_after_confirm:
            cancel_pending(self.session, token.resource_ref, "reminder cancelled: patient confirmed")
        return "reschedule" if kind.startswith("reschedule") else kind

    def survey_tap(self, token: ActionToken) -> str:
        """"Rate my visit" opens the 1-5 list (the tap opened the window); a row becomes a write-back."""
        token.used_at = utcnow()
        self.session.add(token)
        if token.action == survey.OPEN:
            self.send(survey.survey_list(self.session, token.patient_ref, token.resource_ref, self.language))
            return "survey_open"
        survey.retire_answers(self.session, token.patient_ref, token.resource_ref)
        self.request("survey_answer", token.patient_ref, resource_ref=token.resource_ref, slot_ref=token.detail)
        return "survey_answer"

    def ask_cancel(self, token: ActionToken) -> None:
        """Cancelling frees the slot for someone else: ask once to be sure (the appointment's date and time
        are not in the question; the patient has the original message)."""
        body, _ = self.p.texts.render("cancel_ask_short", self.language, self.p.default_language)
        yes = self.mint("cancel_confirmed", token.patient_ref, token.resource_ref, token.version_id)
        no = self.mint("keep", token.patient_ref, token.resource_ref, token.version_id)
        self.send(reply_buttons(body, [
            (yes, self.p.texts.render("yes_cancel", self.language, self.p.default_language)[0]),
            (no, self.p.texts.render("no_keep", self.language, self.p.default_language)[0])]))

    # --- consent

    def stop(self, patients: list[str]) -> str:
        changed = [p for p in patients if _consent_of(self.session, p) != OPTED_OUT]
        for patient in changed:
            set_consent(self.session, patient, OPTED_OUT, "chat")
        suppressed = OutboxStore.suppress_queued(self.session, patients, "patient opted out (STOP)")
        self.suppressed += suppressed
        log.info("STOP: %d patient(s) opted out, %d queued message(s) suppressed", len(changed), suppressed)
        if changed:  # confirm once: a second STOP changes nothing and says nothing
            self.consent_reply(changed[0], "stopped")
            return "opted_out"
        return "already_opted_out"

    def start(self) -> str:
        changed = [p for p in self.patients if _consent_of(self.session, p) != OPTED_IN]
        for patient in changed:
            set_consent(self.session, patient, OPTED_IN, "chat")
        if changed:
            self.consent_reply(changed[0], "started")
            return "opted_in"
        return "already_opted_in"

    def consent_reply(self, patient_ref: str, key: str) -> None:
        self.p.replies.say(self.session, natural_key=f"consent:{self.row.wamid}", patient_ref=patient_ref,
                           recipient=self.recipient, key=key, language=self.language, purpose="consent")



def _consent_of(session: Session, patient_ref: str) -> str | None:
    record = session.get(ConsentRecord, patient_ref)
    return record.status if record else None
