"""Status webhooks are stored first and applied to the outbox afterwards, in batches.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("wa_status", sa.Column("applied_at", sqltypes.UTCDateTime(), nullable=True))
    # Statuses stored before this migration were applied when they arrived.
    op.execute("UPDATE wa_status SET applied_at = received_at")
    op.create_index("ix_wa_status_pending", "wa_status", ["applied_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_wa_status_pending", table_name="wa_status")
    with op.batch_alter_table("wa_status") as batch:
        batch.drop_column("applied_at")
