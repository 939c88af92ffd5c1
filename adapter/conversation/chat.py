"""The service's side of a chat: its settings, replies in the patient's language, the menu, and the
conversation's state (welcomed, handed to staff).

Every reply is queued in the outbox like any message (effectively-once by its natural key, paced,
consent-checked) as a free-form message, with the parameter-less fallback template for when the
24-hour window has closed by the time it goes. Texts come from :mod:`mappings.conversation` and
carry no PHI.

A hand-off's start and end are audited (``handoff``) in the caller's transaction: who caused it
(``patient`` for a message, ``system`` for the pipeline), the Task that staff work from when it is
known, and why, as a code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, DetailValue, Kind, record
from adapter.conversation.front_desk import ROW_APPOINTMENTS, ROW_DEPARTMENTS, ROW_QUESTIONS, ROW_TIPS, FrontDesk
from adapter.conversation.tables import Conversation
from adapter.education.desk import Education
from adapter.outbox.action_tokens import mint_action_token
from adapter.outbox.store import OutboxStore
from adapter.recipients.contacts import ContactBook
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import utcnow
from mappings.conversation import Conversation as Texts
from whatsapp.interactive import list_message, text_message


@dataclass(frozen=True)
class ChatPolicy:
    """Settings of the conversation: how long staff keep a conversation, and their opening hours."""

    handoff_timeout: timedelta = timedelta(hours=24)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    opens: time = time(8, 0)
    closes: time = time(17, 0)
    workdays: frozenset[int] = frozenset(range(5))  # Monday = 0
    remind_after_confirm: bool = False  # setting: a Confirm tap cancels queued reminders unless True


class ChatReplies:
    def __init__(self, outbox: OutboxStore, texts: Texts, default_language: str, fallback_template: str | None,
                 fallback_languages: list[str], front_desk: FrontDesk | None = None,
                 education: Education | None = None) -> None:
        self.outbox = outbox
        # The approved answers and departments (settings: knowledge_file); the shipped file when not given.
        self.front_desk = front_desk or FrontDesk.load()
        # Health-education topics and their sending policy; the shipped content and defaults when not given.
        self.education = education or Education.load()
        self.texts = texts
        self.default_language = default_language
        self.fallback_template = fallback_template
        self.fallback_languages = fallback_languages

    @property
    def contacts(self) -> ContactBook:
        return self.outbox.contacts

    def say(self, session: Session, *, natural_key: str, patient_ref: str, recipient: str, key: str, language: str,
            purpose: str = "reply", **values: str) -> None:
        """Queues the text ``key`` (with ``values``) in ``language``."""
        text, used = self.texts.render(key, language, self.default_language, **values)
        self.send(session, natural_key=natural_key, patient_ref=patient_ref, recipient=recipient,
                  message=text_message(text), language=used, purpose=purpose)

    def send(self, session: Session, *, natural_key: str, patient_ref: str, recipient: str, message: dict[str, Any],
             language: str, purpose: str = "reply", first: bool = False) -> None:
        """Queues a chat message behind what the number is already waiting for: a message held back by
        pacing keeps its place, so a later reply never overtakes it (the claim goes by due time, then
        by id). ``first``: ahead of the replies of the same turn (the welcome, which explains them)."""
        recipient_key = self.contacts.remember(session, patient_ref, recipient)
        due = max(utcnow(), self.outbox.queue_tail(session, recipient_key) or utcnow())
        self.outbox.enqueue_message(
            session, natural_key=natural_key, rule_id=f"chat.{purpose}", resource_ref=patient_ref,
            patient_ref=patient_ref, recipient=recipient, message=message,
            due_at=due - timedelta(seconds=1) if first else due, purpose=purpose, fallback=self._fallback(language),
            recipient_key=recipient_key)

    def menu(self, session: Session, *, natural_key: str, patient_ref: str, recipient: str, language: str,
             body: str = "menu") -> None:
        """The menu, an interactive list: my appointments, common questions, departments, health tips (when
        topics are offered), talk to staff, stop messages. The first rows are fixed ids; staff and stop are
        the patient's own action tokens."""
        def title(key: str) -> str:
            return self.texts.render(key, language, self.default_language)[0]

        staff = mint_action_token(session, action="talk_to_staff", patient_ref=patient_ref, resource_ref=patient_ref,
                                  version_id=None)
        stop = mint_action_token(session, action="stop", patient_ref=patient_ref, resource_ref=patient_ref,
                                 version_id=None)
        rows: list[tuple[str, str, str | None]] = [
            (ROW_APPOINTMENTS, title("menu_appointments"), None), (ROW_QUESTIONS, title("menu_questions"), None),
            (ROW_DEPARTMENTS, title("menu_departments"), None)]
        if self.education.content.topics:
            rows.append((ROW_TIPS, self.education.content.text("menu_row", language, self.default_language), None))
        rows += [(staff, title("menu_staff"), None), (stop, title("menu_stop"), None)]
        self.send(session, natural_key=natural_key, patient_ref=patient_ref, recipient=recipient, language=language,
                  message=list_message(title(body), title("menu_button"), rows))

    def _fallback(self, language: str) -> dict[str, Any] | None:
        if not self.fallback_template:
            return None
        code = language if language in self.fallback_languages else self.default_language
        return {"name": self.fallback_template, "language": {"code": code}}

    def recipient_of(self, session: Session, phone_index: bytes) -> tuple[str, str] | None:
        """(patient reference, number) of a contact with this number index, to answer it."""
        contact = session.exec(select(WhatsAppContact).where(col(WhatsAppContact.phone_index) == phone_index)
                               .order_by(col(WhatsAppContact.id))).first()
        return (contact.patient_ref, self.contacts.phone_of(contact)) if contact else None


def conversation_of(session: Session, phone_index: bytes) -> Conversation:
    found = session.get(Conversation, phone_index, with_for_update=True)
    if found is None:
        found = Conversation(phone_index=phone_index, updated_at=utcnow())
        session.add(found)
    return found


def in_handoff(conversation: Conversation, now: datetime) -> bool:
    return conversation.handoff_until is not None and conversation.handoff_until > now


def start_handoff(session: Session, conversation: Conversation, task_ref: str | None, timeout: timedelta, *,
                  patient_ref: str | None = None, agent: str = "system", reason: str | None = None,
                  urgent: bool = False) -> None:
    """Hands the conversation to staff (again, when a Task for it was just created), and audits it."""
    conversation.handoff_until = utcnow() + timeout
    conversation.handoff_task = task_ref or conversation.handoff_task
    conversation.updated_at = utcnow()
    session.add(conversation)
    detail: dict[str, DetailValue] = {"event": "task" if task_ref else "start", "reason": reason}
    if urgent:
        detail["urgent"] = True
    _audit_handoff(session, Action.CREATE if not task_ref else Action.UPDATE, agent, patient_ref,
                   conversation.handoff_task, detail)


def end_handoff(session: Session, conversation: Conversation, *, patient_ref: str | None = None,
                agent: str = "system", reason: str | None = None) -> None:
    """Gives the conversation back to the bot, and audits it (with the Task it was handed over in)."""
    task_ref = conversation.handoff_task
    conversation.handoff_until, conversation.handoff_task, conversation.updated_at = None, None, utcnow()
    session.add(conversation)
    _audit_handoff(session, Action.UPDATE, agent, patient_ref, task_ref, {"event": "end", "reason": reason})


def _audit_handoff(session: Session, action: Action, agent: str, patient_ref: str | None, task_ref: str | None,
                   detail: dict[str, DetailValue]) -> None:
    # The conversation is keyed by the number's blind index, which must not reach the audit trail:
    # the Task (when there is one) and the patient are the references.
    record(session, AuditEntry(kind=Kind.HANDOFF, action=action, agent=agent, patient_ref=patient_ref,
                               entity_ref=task_ref, detail={k: v for k, v in detail.items() if v is not None}))
