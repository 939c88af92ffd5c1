"""Who may be messaged and how to reach them: consent per patient, and WhatsApp contacts (the
number encrypted, found by a keyed blind index, never stored in clear).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class ConsentRecord(SQLModel, table=True):
    """The local opt-in registry, keyed by the patient's FHIR reference."""

    __tablename__ = "consent"

    patient_ref: str = Field(primary_key=True, max_length=200)
    status: str = Field(max_length=16)  # opted_in | opted_out
    source: str = Field(max_length=32)  # admin | chat | import
    changed_at: datetime


class WhatsAppContact(SQLModel, table=True):
    """A patient's WhatsApp number (encrypted, found by its blind index), the business-scoped user
    id Meta reported for it, and when that user last wrote (the 24-hour customer service window).
    One number may serve several patients (a parent's phone), so STOP applies to all of them."""

    __tablename__ = "wa_contact"
    __table_args__ = (UniqueConstraint("patient_ref", "phone_index"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_ref: str = Field(max_length=200, index=True)
    phone_index: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, index=True))
    phone_enc: str = Field(sa_column=Column(Text, nullable=False))
    user_id_index: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32), nullable=True, index=True))
    last_inbound_at: datetime | None = None
    updated_at: datetime
