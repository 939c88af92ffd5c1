"""The HL7 v2 feed's tables: each received message (its raw text encrypted) and, per appointment, the
place in its history of the last message applied.

Dedupe is a unique key on (sending facility, MSH-10), as HL7 v2.5.1 2.10.1 makes MSH-10 unique per
sending system. The original order per appointment (sending facility, filler id, SCH-2) follows
:func:`ehr.hl7.ordering.is_stale`: MSH-7, then the trigger's rank. No column holds a message's
content in clear text; the facility, control id and filler id are identifiers like a FHIR id.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from adapter.storage.claimable import claimable_index

HL7_CLAIMABLE = ("pending",)  # done, stale and dead are finished: the claim never reads them


class Hl7Message(SQLModel, table=True):
    """One message acknowledged ``AA``: committed before its ACK, processed afterwards."""

    __tablename__ = "hl7_message"
    __table_args__ = (UniqueConstraint("facility", "control_id", name="uq_hl7_message_control_id"),
                      claimable_index("ix_hl7_message_claimable", "id", states=HL7_CLAIMABLE))

    id: int | None = Field(default=None, primary_key=True)
    facility: str = Field(max_length=180)  # MSH-4.1
    control_id: str = Field(max_length=199)  # MSH-10
    message_type: str = Field(max_length=8)  # MSH-9.1
    trigger: str = Field(max_length=8)  # MSH-9.2
    message_time: datetime  # MSH-7
    raw_enc: str = Field(sa_column=Column(Text, nullable=False))  # encrypted, bound to facility and MSH-10
    state: str = Field(default="pending", max_length=16)  # pending | done | stale | dead
    attempts: int = 0
    next_attempt_at: datetime
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, max_length=200)
    received_at: datetime
    processed_at: datetime | None = None


class Hl7Appointment(SQLModel, table=True):
    """Per appointment: the FHIR id it is decided under and the last message applied to it."""

    __tablename__ = "hl7_appointment"
    # Taps name the resource; not UNIQUE (a digest of the key): a second unique index would defeat ON CONFLICT.
    __table_args__ = (Index("ix_hl7_appointment_resource", "resource_id"),)

    facility: str = Field(primary_key=True, max_length=180)
    filler_id: str = Field(primary_key=True, max_length=199)  # SCH-2 (or the facility's position)
    resource_id: str = Field(max_length=64)  # Appointment.id in the decide path
    placer_id: str | None = Field(default=None, max_length=199)
    application: str = Field(default="", max_length=180)  # MSH-3.1 of the sender: where requests go back
    message_time: datetime  # MSH-7 of the last message applied
    trigger: str = Field(max_length=8)  # its trigger (S12 ... S26)
    message_id: int  # its hl7_message.id
