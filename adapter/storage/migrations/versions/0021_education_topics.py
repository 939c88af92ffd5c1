"""Health education (adapter.education): a patient's consent to one topic's tips, kept apart from the consent
to care messages, with where it came from and when.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topic_consent",
        sa.Column("patient_ref", sqltypes.AutoString(length=200), nullable=False),
        sa.Column("topic", sqltypes.AutoString(length=40), nullable=False),
        sa.Column("status", sqltypes.AutoString(length=16), nullable=False),
        sa.Column("source", sqltypes.AutoString(length=32), nullable=False),
        sa.Column("changed_at", sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("patient_ref", "topic"),
    )


def downgrade() -> None:
    op.drop_table("topic_consent")
