"""Backport subscription feeds: event numbers, heartbeats, status and recoveries per feed.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backport_feed",
        sa.Column("subscription_key", sqltypes.AutoString(64), primary_key=True),
        sa.Column("subscription_id", sqltypes.AutoString(64), nullable=True),
        sa.Column("heartbeat_seconds", sa.Integer(), nullable=True),
        sa.Column("last_event_number", sa.Integer(), nullable=True),
        sa.Column("pending_numbers", sqltypes.AutoString(400), nullable=False),
        sa.Column("gap_since", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_good_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_notification_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_heartbeat_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_status", sqltypes.AutoString(16), nullable=True),
        sa.Column("last_status_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("recoveries", sa.Integer(), nullable=False),
        sa.Column("last_recovery_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_recovery", sqltypes.AutoString(32), nullable=True),
        sa.Column("lease_until", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sqltypes.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("backport_feed")
