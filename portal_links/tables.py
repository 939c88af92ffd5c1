"""The portal links' tables: one row per link (the SHA-256 hash of its token, never the token) and
one per request made with a link (the access log).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel


class LinkToken(SQLModel, table=True):
    """State a portal-link signature cannot carry; found by the token's SHA-256, never the token."""

    __tablename__ = "link_token"
    # Revocation by patient or by creation window is one UPDATE each: indexed, not a table scan.
    __table_args__ = (Index("ix_link_token_patient_ref", "patient_ref"),
                      Index("ix_link_token_created_at", "created_at"))

    id: int | None = Field(default=None, primary_key=True)
    token_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))
    purpose: str = Field(max_length=32)
    target: str = Field(max_length=32)
    patient_ref: str = Field(max_length=200)
    resource_ref: str = Field(max_length=200)
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    max_opens: int = 5
    opens: int = 0
    # The outbox natural key of the message the link was sent in (revoke "all links of a message").
    message_key: str | None = Field(default=None, max_length=300, index=True)


class LinkRequest(SQLModel, table=True):
    """One request to a portal link (GET, HEAD or POST): the link's access log.

    ``link_id`` is NULL when the token named no link (malformed, forged, unknown); the token and
    its hash are never stored here. ``ua_class`` labels the client for reading only: no decision
    depends on it.
    """

    __tablename__ = "link_request"
    __table_args__ = (Index("ix_link_request_client_at", "client", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    link_id: int | None = Field(default=None, index=True)
    outcome: str = Field(max_length=16)  # preview|opened|expired|revoked|exhausted|unknown|malformed|rate_limited
    client: str | None = Field(default=None, max_length=64)
    ua_class: str = Field(max_length=16)  # whatsapp|facebook|headless|browser|bot|other
    method: str = Field(max_length=8)
    at: datetime = Field(index=True)
