"""Instance liveness: each boot of a service instance keeps a heartbeat row, and every lease names the
boot holding it, so a dead instance's claims are released in seconds instead of waiting out the lease
(adapter.ops.liveness). A status index by callback data lets a message taken over in doubt find the
status that proves it was sent (adapter.outbox.claims).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Written out, not imported: a migration stays what it was when later code changes.
LEASED = sa.text("lease_until IS NOT NULL")
CALLBACK = sa.text("callback_data IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "service_instance",
        sa.Column("boot_id", sqltypes.AutoString(32), primary_key=True),
        sa.Column("name", sqltypes.AutoString(120), nullable=False),
        sa.Column("started_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_service_instance_name", "service_instance", ["name"])
    for table in ("outbox", "inbox_event", "backport_feed"):
        op.add_column(table, sa.Column("lease_owner", sqltypes.AutoString(32), nullable=True))
    op.create_index("ix_outbox_leased", "outbox", ["lease_owner"], postgresql_where=LEASED, sqlite_where=LEASED)
    op.create_index("ix_inbox_leased", "inbox_event", ["lease_owner"], postgresql_where=LEASED,
                    sqlite_where=LEASED)
    op.create_index("ix_wa_status_callback", "wa_status", ["callback_data"], postgresql_where=CALLBACK,
                    sqlite_where=CALLBACK)


def downgrade() -> None:
    op.drop_index("ix_wa_status_callback", table_name="wa_status")
    op.drop_index("ix_inbox_leased", table_name="inbox_event")
    op.drop_index("ix_outbox_leased", table_name="outbox")
    for table in ("backport_feed", "inbox_event", "outbox"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("lease_owner")
    op.drop_index("ix_service_instance_name", table_name="service_instance")
    op.drop_table("service_instance")
