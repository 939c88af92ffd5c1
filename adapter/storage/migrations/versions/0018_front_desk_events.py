"""The front desk's counters (adapter.conversation.answers): approved answers served (entry id and
version), lists offered, questions that found nothing, and "was this helpful?" taps — per language and
time, never with the question's text or the patient.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "front_desk_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("kind", sqltypes.AutoString(length=16), nullable=False),
        sa.Column("language", sqltypes.AutoString(length=16), nullable=False),
        sa.Column("entry", sqltypes.AutoString(length=80), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_front_desk_event_kind_at", "front_desk_event", ["kind", "at"])


def downgrade() -> None:
    op.drop_index("ix_front_desk_event_kind_at", table_name="front_desk_event")
    op.drop_table("front_desk_event")
