"""Polling feeds and feed health: the ``feed_state`` table (:mod:`adapter.feeds.tables`).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_state",
        sa.Column("feed", sqltypes.AutoString(80), primary_key=True),
        sa.Column("kind", sqltypes.AutoString(16), nullable=False),
        sa.Column("key", sqltypes.AutoString(64), nullable=False),
        sa.Column("status", sqltypes.AutoString(32), nullable=False),
        sa.Column("fhir_id", sqltypes.AutoString(64), nullable=True),
        sa.Column("watermark", sqltypes.AutoString(40), nullable=True),
        sa.Column("start_at", sqltypes.AutoString(40), nullable=True),
        sa.Column("last_found", sa.Integer(), nullable=False),
        sa.Column("last_run_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_ok_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", sqltypes.AutoString(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("feed_state")
