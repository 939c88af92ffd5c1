"""Indexes for revoking portal links by patient and by creation window.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_link_token_patient_ref", "link_token", ["patient_ref"])
    op.create_index("ix_link_token_created_at", "link_token", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_link_token_created_at", table_name="link_token")
    op.drop_index("ix_link_token_patient_ref", table_name="link_token")
