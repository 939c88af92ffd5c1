"""The audit tables, API credentials and legal holds (SQLModel; migration 0007).

``audit_event`` rows are written in the same transaction as the action they record and are never
changed. A single chaining step later gives each one a gapless sequence number and a hash that
links it to the one before (``audit_chain``), because database sequences have gaps and do not
follow commit order. ``audit_pending`` is the chaining step's queue. Signed ``audit_checkpoint``
rows fix the chain's head and a Merkle root at intervals. Triggers (both databases) and grants
(PostgreSQL) refuse UPDATE and DELETE on these tables; the only deletes allowed are retention
purges covered by an ``audit_purge`` permit row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text
from sqlmodel import Field, SQLModel


class AuditEvent(SQLModel, table=True):
    """One audited action. References only (patient, resource, link, message ids): never a phone
    number, token, name or message text."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_patient_at", "patient_ref", "recorded_at"),
                      Index("ix_audit_event_kind_at", "kind", "recorded_at"))

    id: int | None = Field(default=None, primary_key=True)
    recorded_at: datetime = Field(index=True)
    kind: str = Field(max_length=32)  # see adapter.audit.trail.Kind
    action: str = Field(max_length=1)  # FHIR AuditEvent.action: C R U D E
    outcome: str = Field(max_length=2)  # FHIR AuditEvent.outcome: 0 4 8 12
    agent: str = Field(max_length=200)  # who acted: system, patient, ehr, meta, user:<name>, cli:<name>
    agent_role: str | None = Field(default=None, max_length=32)
    source: str | None = Field(default=None, max_length=64)  # network address the request came from
    patient_ref: str | None = Field(default=None, max_length=200)
    entity_ref: str | None = Field(default=None, max_length=300, index=True)
    purpose: str | None = Field(default=None, max_length=300)  # a stated reason (privacy officer)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON object, PHI-free


class AuditPending(SQLModel, table=True):
    """Audit events written but not chained yet: the chaining step's queue."""

    __tablename__ = "audit_pending"

    event_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})


class AuditChain(SQLModel, table=True):
    """An event's place in the hash chain: ``hash = SHA-256(prev_hash || canonical(event, seq))``."""

    __tablename__ = "audit_chain"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    event_id: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    prev_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    chained_at: datetime


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement of the chain: records ``first_seq..seq``, head hash and Merkle root, signed
    with an Ed25519 key kept outside the database."""

    __tablename__ = "audit_checkpoint"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    first_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    head: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    merkle_root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    created_at: datetime
    key_id: str = Field(max_length=64)
    signature: bytes = Field(sa_column=Column(LargeBinary(64), nullable=False))


class AuditPurge(SQLModel, table=True):
    """A retention purge of the audit trail: the permit the delete triggers check, kept forever.
    Records ``seq <= up_to_seq`` may be deleted; checkpoint ``boundary_seq`` stays as the new start."""

    __tablename__ = "audit_purge"

    id: int | None = Field(default=None, primary_key=True)
    up_to_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    boundary_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    reason: str = Field(max_length=300)
    at: datetime


class LegalHold(SQLModel, table=True):
    """Keeps audit records from retention purges: one patient's (``patient_ref``) or all (NULL)."""

    __tablename__ = "legal_hold"

    id: int | None = Field(default=None, primary_key=True)
    patient_ref: str | None = Field(default=None, max_length=200)
    reason: str = Field(max_length=300)
    created_by: str = Field(max_length=200)
    created_at: datetime
    released_at: datetime | None = None
