"""API credentials and sessions for the auditor and admin APIs: keys and session tokens are
stored as SHA-256 hashes, never in clear.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary, String
from sqlmodel import Field, SQLModel


class ApiCredential(SQLModel, table=True):
    """A person's or system's API key for the auditor/admin API; only its SHA-256 is stored."""

    __tablename__ = "api_credential"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    role: str = Field(max_length=32)  # auditor | privacy_officer | admin | integration
    secret_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))
    created_at: datetime
    revoked_at: datetime | None = None


class ApiSession(SQLModel, table=True):
    """A short-lived session opened by logging in with a credential; only the token's SHA-256 is stored."""

    __tablename__ = "api_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))
    credential_id: int = Field(index=True)
    role: str = Field(max_length=32)
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
