"""The conversation's tables: inbound WhatsApp messages (content encrypted, sensitive numbers
removed before storage), each number's chat state (language, hand-off), and the action requests
that patients' taps leave for the EHR writer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


class InboundMessage(SQLModel, table=True):
    """An inbound WhatsApp message, stored once by its id before the 200 and processed afterwards
    (:mod:`adapter.conversation.inbound`). Its content is encrypted and dropped once processed."""

    __tablename__ = "wa_inbound"
    __table_args__ = (Index("ix_wa_inbound_pending", "state", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    wamid: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    message_type: str = Field(max_length=32)
    meta_timestamp: int
    received_at: datetime
    state: str = Field(default="pending", max_length=16)  # pending | done
    content_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    outcome: str | None = Field(default=None, max_length=32)
    processed_at: datetime | None = None


class Conversation(SQLModel, table=True):
    """The chat with one WhatsApp number: welcomed yet, and whether staff have taken it over (the bot
    stays silent, except for emergencies and STOP, until the hand-off Task is done or times out)."""

    __tablename__ = "conversation"

    phone_index: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    welcomed_at: datetime | None = None
    handoff_task: str | None = Field(default=None, max_length=200)
    handoff_until: datetime | None = None
    updated_at: datetime


class ActionRequest(SQLModel, table=True):
    """Work a patient's message asked for that needs the EHR (confirm, cancel, reschedule, hand-off):
    stored in the inbound step's transaction, carried out by the pipeline, retried if the EHR is down."""

    __tablename__ = "action_request"
    __table_args__ = (Index("ix_action_request_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    kind: str = Field(max_length=32)
    patient_ref: str = Field(max_length=200)
    resource_ref: str | None = Field(default=None, max_length=200)
    version_id: str | None = Field(default=None, max_length=64)
    slot_ref: str | None = Field(default=None, max_length=200)
    phone_index: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    language: str = Field(max_length=16)
    urgent: bool = False
    state: str = Field(default="pending", max_length=16)  # pending | done | failed
    attempts: int = 0
    next_attempt_at: datetime
    outcome: str | None = Field(default=None, max_length=64)
    created_at: datetime


class FrontDeskEvent(SQLModel, table=True):
    """One thing the front desk did with a patient's question, counted for operators and never with the
    question's text or the patient: an approved answer served (``answered``, with the entry's id and
    version), entries offered as a list (``choices``), nothing found (``unanswered``), and the "was this
    helpful?" taps (``helpful`` / ``unhelpful``, with the entry). See :mod:`adapter.conversation.answers`."""

    __tablename__ = "front_desk_event"
    __table_args__ = (Index("ix_front_desk_event_kind_at", "kind", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime
    kind: str = Field(max_length=16)
    language: str = Field(max_length=16)
    entry: str | None = Field(default=None, max_length=80)  # "<entry id>@<version>"
