"""Claimable indexes: partial indexes over the rows a claim can take (pending inbox events by id,
queued or sending outbox rows by due time), so a claim reads an index in order and never the
finished history (adapter.storage.claimable).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Written out, not imported: a migration stays what it was when later code changes.
INBOX_PENDING = sa.text("state IN ('pending')")
OUTBOX_IN_FLIGHT = sa.text("state IN ('queued', 'sending')")


def upgrade() -> None:
    op.create_index("ix_inbox_claimable", "inbox_event", ["id"],
                    postgresql_where=INBOX_PENDING, sqlite_where=INBOX_PENDING)
    op.create_index("ix_outbox_claimable", "outbox", ["due_at", "id"],
                    postgresql_where=OUTBOX_IN_FLIGHT, sqlite_where=OUTBOX_IN_FLIGHT)


def downgrade() -> None:
    op.drop_index("ix_outbox_claimable", table_name="outbox")
    op.drop_index("ix_inbox_claimable", table_name="inbox_event")
