"""Health education's table: a patient's consent to one topic's tips, apart from care messages.

Keyed like :class:`adapter.recipients.tables.ConsentRecord` (the patient's FHIR reference) and the topic:
opting in to care messages says nothing about a topic, and a topic's opt-in never overrides a global STOP
(the claim suppresses everything for an opted-out patient, :mod:`adapter.outbox.claims`).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class TopicConsent(SQLModel, table=True):
    """One patient's subscription to one topic: ``opted_in`` or ``opted_out``, where the change came from
    (``chat`` from the menu or "STOP <topic>", ``stop`` from a global STOP) and when."""

    __tablename__ = "topic_consent"

    patient_ref: str = Field(primary_key=True, max_length=200)
    topic: str = Field(primary_key=True, max_length=40)
    status: str = Field(max_length=16)  # opted_in | opted_out
    source: str = Field(max_length=32)
    changed_at: datetime
