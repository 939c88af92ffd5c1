"""The HL7 v2 feed (adapter.feeds.hl7_store): messages received over MLLP, their raw text encrypted and
deduplicated on (sending facility, MSH-10), and per appointment the last message applied, which keeps
the original order when messages arrive out of order.

Revision ID: 0020
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None

# Written out, not imported: a migration stays what it was when later code changes.
HL7_PENDING = sa.text("state IN ('pending')")


def upgrade() -> None:
    op.create_table(
        "hl7_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility", sqltypes.AutoString(length=180), nullable=False),
        sa.Column("control_id", sqltypes.AutoString(length=199), nullable=False),
        sa.Column("message_type", sqltypes.AutoString(length=8), nullable=False),
        sa.Column("trigger", sqltypes.AutoString(length=8), nullable=False),
        sa.Column("message_time", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("raw_enc", sa.Text(), nullable=False),
        sa.Column("state", sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("lease_until", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", sqltypes.AutoString(length=200), nullable=True),
        sa.Column("received_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("processed_at", sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("facility", "control_id", name="uq_hl7_message_control_id"),
    )
    op.create_index("ix_hl7_message_claimable", "hl7_message", ["id"],
                    postgresql_where=HL7_PENDING, sqlite_where=HL7_PENDING)
    op.create_table(
        "hl7_appointment",
        sa.Column("facility", sqltypes.AutoString(length=180), nullable=False),
        sa.Column("filler_id", sqltypes.AutoString(length=199), nullable=False),
        sa.Column("resource_id", sqltypes.AutoString(length=64), nullable=False),
        sa.Column("placer_id", sqltypes.AutoString(length=199), nullable=True),
        sa.Column("application", sqltypes.AutoString(length=180), nullable=False),
        sa.Column("message_time", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("trigger", sqltypes.AutoString(length=8), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("facility", "filler_id"),
    )
    op.create_index("ix_hl7_appointment_resource", "hl7_appointment", ["resource_id"])


def downgrade() -> None:
    op.drop_index("ix_hl7_appointment_resource", table_name="hl7_appointment")
    op.drop_table("hl7_appointment")
    op.drop_index("ix_hl7_message_claimable", table_name="hl7_message")
    op.drop_table("hl7_message")
