"""The audit trail (events, chain, checkpoints, purge permits), legal holds, API credentials and
sessions — and the triggers that make the audit tables insert-only on both databases.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# When a delete is allowed: only rows a retention purge permit covers (see adapter.audit.tables).
_DELETE_ALLOWED = {
    "audit_event": "EXISTS (SELECT 1 FROM audit_chain c JOIN audit_purge p ON c.seq <= p.up_to_seq "
                   "WHERE c.event_id = OLD.id)",
    "audit_chain": "EXISTS (SELECT 1 FROM audit_purge p WHERE OLD.seq <= p.up_to_seq)",
    "audit_checkpoint": "EXISTS (SELECT 1 FROM audit_purge p WHERE OLD.seq < p.boundary_seq)",
    "audit_purge": "FALSE",
}
GUARDED_TABLES = tuple(_DELETE_ALLOWED)


def _sqlite_triggers() -> list[str]:
    statements = []
    for table, allowed in _DELETE_ALLOWED.items():
        condition = "0" if allowed == "FALSE" else allowed
        statements.append(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'audit records are insert-only: {table} cannot be updated'); END")
        statements.append(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} WHEN NOT ({condition}) "
            f"BEGIN SELECT RAISE(ABORT, 'audit records are insert-only: {table} rows are removed only "
            "by a retention purge'); END")
    return statements


def _postgres_triggers() -> list[str]:
    statements = []
    for table, allowed in _DELETE_ALLOWED.items():
        statements.append(f"""
CREATE FUNCTION {table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    RAISE EXCEPTION 'audit records are insert-only: {table} cannot be updated'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT ({allowed}) THEN
    RAISE EXCEPTION 'audit records are insert-only: {table} rows are removed only by a retention purge'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN OLD;
END $$""")
        statements.append(f"CREATE TRIGGER {table}_guard BEFORE UPDATE OR DELETE ON {table} "
                          f"FOR EACH ROW EXECUTE FUNCTION {table}_guard()")
        # TRUNCATE bypasses row triggers; refuse it too.
        statements.append(f"""
CREATE FUNCTION {table}_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit records are insert-only: {table} cannot be truncated'
    USING ERRCODE = 'insufficient_privilege';
END $$""")
        statements.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                          f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_no_truncate()")
    return statements


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("recorded_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("kind", sqltypes.AutoString(32), nullable=False),
        sa.Column("action", sqltypes.AutoString(1), nullable=False),
        sa.Column("outcome", sqltypes.AutoString(2), nullable=False),
        sa.Column("agent", sqltypes.AutoString(200), nullable=False),
        sa.Column("agent_role", sqltypes.AutoString(32), nullable=True),
        sa.Column("source", sqltypes.AutoString(64), nullable=True),
        sa.Column("patient_ref", sqltypes.AutoString(200), nullable=True),
        sa.Column("entity_ref", sqltypes.AutoString(300), nullable=True),
        sa.Column("purpose", sqltypes.AutoString(300), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_event_recorded_at", "audit_event", ["recorded_at"])
    op.create_index("ix_audit_event_entity_ref", "audit_event", ["entity_ref"])
    op.create_index("ix_audit_event_patient_at", "audit_event", ["patient_ref", "recorded_at"])
    op.create_index("ix_audit_event_kind_at", "audit_event", ["kind", "recorded_at"])
    op.create_table("audit_pending", sa.Column("event_id", sa.Integer(), primary_key=True, autoincrement=False))
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("chained_at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(32), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("key_id", sqltypes.AutoString(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
    )
    op.create_table(
        "audit_purge",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("up_to_seq", sa.BigInteger(), nullable=False),
        sa.Column("boundary_seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sqltypes.AutoString(300), nullable=False),
        sa.Column("at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "legal_hold",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_ref", sqltypes.AutoString(200), nullable=True),
        sa.Column("reason", sqltypes.AutoString(300), nullable=False),
        sa.Column("created_by", sqltypes.AutoString(200), nullable=False),
        sa.Column("created_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("released_at", sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_table(
        "api_credential",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sqltypes.AutoString(32), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("created_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_table(
        "api_session",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("credential_id", sa.Integer(), nullable=False),
        sa.Column("role", sqltypes.AutoString(32), nullable=False),
        sa.Column("created_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ended_at", sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_session_credential_id", "api_session", ["credential_id"])
    dialect = op.get_bind().dialect.name
    for statement in _postgres_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in GUARDED_TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_guard ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_guard()")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_no_truncate()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    for table in ("api_session", "api_credential", "legal_hold", "audit_purge", "audit_checkpoint",
                  "audit_chain", "audit_pending", "audit_event"):
        op.drop_table(table)
