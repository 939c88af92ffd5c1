"""Conversations (welcome, staff hand-off) and the EHR work patients' taps ask for.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("action_token", sa.Column("detail", sqltypes.AutoString(200), nullable=True))
    op.create_table(
        "conversation",
        sa.Column("phone_index", sa.LargeBinary(32), primary_key=True),
        sa.Column("welcomed_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("handoff_task", sqltypes.AutoString(200), nullable=True),
        sa.Column("handoff_until", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "action_request",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sqltypes.AutoString(32), nullable=False),
        sa.Column("patient_ref", sqltypes.AutoString(200), nullable=False),
        sa.Column("resource_ref", sqltypes.AutoString(200), nullable=True),
        sa.Column("version_id", sqltypes.AutoString(64), nullable=True),
        sa.Column("slot_ref", sqltypes.AutoString(200), nullable=True),
        sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
        sa.Column("language", sqltypes.AutoString(16), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("state", sqltypes.AutoString(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("outcome", sqltypes.AutoString(64), nullable=True),
        sa.Column("created_at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_action_request_due", "action_request", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_action_request_due", table_name="action_request")
    op.drop_table("action_request")
    op.drop_table("conversation")
    with op.batch_alter_table("action_token") as batch:
        batch.drop_column("detail")
