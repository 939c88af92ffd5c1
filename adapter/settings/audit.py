"""Settings of the audit trail and retention: the key that signs audit checkpoints (kept outside the
database) and how often they are made and exported, pushing records to the EHR as BALP AuditEvents
(https://profiles.ihe.net/ITI/BALP/), API sessions, and how long links, message details and audit records
are kept (HIPAA: audit records 6 years at least)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class AuditSettings(BaseModel):
    # --- audit trail and retention
    audit_signing_key_file: Path | None = Field(
        None, description="Ed25519 private key (PEM, `bridge audit keygen`) that signs audit checkpoints; kept outside "
        "the database. Demo mode without it signs with a throwaway key.",
    )
    audit_checkpoint_every: int = Field(
        1000, ge=1, le=1_000_000, description="Audit records between two signed checkpoints."
    )
    audit_checkpoint_seconds: float = Field(
        300.0, gt=0, le=86400, description="Longest time between two signed checkpoints while records arrive."
    )
    audit_checkpoint_export_dir: Path | None = Field(
        None, description="Directory (write-once storage, a SIEM's drop folder) that gets each signed checkpoint "
        "as a line of JSON.",
    )
    audit_push_to_ehr: bool = Field(
        False, description="Also POST each audit record to the EHR's FHIR server as a BALP AuditEvent."
    )
    api_session_minutes: int = Field(
        15, ge=1, le=720, description="How long an auditor/admin API session lasts after logging in."
    )
    retention_link_days: int = Field(
        30, ge=1, le=3650, description="Days after a portal link expires before its rows are deleted."
    )
    retention_message_days: int = Field(
        90, ge=7, le=3650, description="Days after which a sent message's payload details are deleted."
    )
    retention_hl7_raw_days: int = Field(
        14, ge=1, le=3650, description="Days a stale or dead HL7 v2 message keeps its encrypted text (for "
        "`bridge hl7 dead retry`); processed ones lose it at once."
    )
    retention_hl7_open_days: int = Field(
        400, ge=30, le=3650, description="Days after the last message about an HL7-fed appointment that its feed "
        "never ended (no S15/S17/S26) before its ordering record goes; ended ones go after retention_message_days."
    )
    retention_audit_years: int = Field(
        6, ge=6, le=100, description="Years audit records are kept (HIPAA: 6 at least); legal holds keep them longer."
    )
    audit_maintenance_database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL of the owner/maintenance role, used only by `bridge audit purge` and "
        "`bridge audit grant-app-role` (the application's role cannot delete audit records).",
    )
    retention_batch_size: int = Field(
        500, ge=1, le=50_000, description="Rows deleted per transaction by a retention purge."
    )
