"""The status claim's index: a partial index of the unapplied statuses in id order, replacing the
index on (applied_at, id), so the claim reads only unapplied rows whatever the applied history
(adapter.outbox.statuses).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Written out, not imported: a migration stays what it was when later code changes.
UNAPPLIED = sa.text("applied_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_wa_status_unapplied", "wa_status", ["id"], postgresql_where=UNAPPLIED, sqlite_where=UNAPPLIED)
    op.drop_index("ix_wa_status_pending", table_name="wa_status")


def downgrade() -> None:
    op.create_index("ix_wa_status_pending", "wa_status", ["applied_at", "id"])
    op.drop_index("ix_wa_status_unapplied", table_name="wa_status")
