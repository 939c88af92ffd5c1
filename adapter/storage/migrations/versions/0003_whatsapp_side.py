"""The WhatsApp side: contacts and their 24-hour window, pacing per recipient, the shared circuit
breaker, operator alerts, template review states, and inbound content kept until processed.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("recipient_key", sa.LargeBinary(32), nullable=True))
    op.add_column("outbox", sa.Column("purpose", sqltypes.AutoString(16), nullable=False, server_default="notify"))
    op.add_column("outbox", sa.Column("fallback", sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("hook_state", sqltypes.AutoString(16), nullable=True))
    op.create_index("ix_outbox_recipient_key", "outbox", ["recipient_key"])

    op.add_column("wa_status", sa.Column("error_title", sqltypes.AutoString(200), nullable=True))
    op.add_column("wa_status", sa.Column("user_id_index", sa.LargeBinary(32), nullable=True))

    op.add_column("wa_inbound", sa.Column("content_enc", sa.Text(), nullable=True))
    op.add_column("wa_inbound", sa.Column("outcome", sqltypes.AutoString(32), nullable=True))
    op.add_column("wa_inbound", sa.Column("processed_at", sqltypes.UTCDateTime(), nullable=True))
    # Inbound rows stored before this migration had no content to process.
    op.execute("UPDATE wa_inbound SET state = 'done', outcome = 'before_0003' WHERE state = 'pending'")
    op.create_index("ix_wa_inbound_pending", "wa_inbound", ["state", "id"])

    op.create_table(
        "wa_contact",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_ref", sqltypes.AutoString(200), nullable=False),
        sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
        sa.Column("phone_enc", sa.Text(), nullable=False),
        sa.Column("user_id_index", sa.LargeBinary(32), nullable=True),
        sa.Column("last_inbound_at", sqltypes.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sqltypes.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("patient_ref", "phone_index"),
    )
    op.create_index("ix_wa_contact_patient_ref", "wa_contact", ["patient_ref"])
    op.create_index("ix_wa_contact_phone_index", "wa_contact", ["phone_index"])
    op.create_index("ix_wa_contact_user_id_index", "wa_contact", ["user_id_index"])

    op.create_table(
        "recipient_pace",
        sa.Column("recipient_key", sa.LargeBinary(32), primary_key=True),
        sa.Column("next_send_at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "service_flag",
        sa.Column("name", sqltypes.AutoString(64), primary_key=True),
        sa.Column("reason", sqltypes.AutoString(300), nullable=False),
        sa.Column("set_at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "operator_alert",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sqltypes.AutoString(64), nullable=False),
        sa.Column("detail", sqltypes.AutoString(300), nullable=False),
        sa.Column("created_at", sqltypes.UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_table(
        "template_state",
        sa.Column("name", sqltypes.AutoString(512), primary_key=True),
        sa.Column("language", sqltypes.AutoString(16), primary_key=True),
        sa.Column("status", sqltypes.AutoString(32), nullable=False),
        sa.Column("remote_id", sqltypes.AutoString(64), nullable=True),
        sa.Column("reason", sqltypes.AutoString(200), nullable=True),
        sa.Column("updated_at", sqltypes.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("template_state", "operator_alert", "service_flag", "recipient_pace", "wa_contact"):
        op.drop_table(table)
    op.drop_index("ix_wa_inbound_pending", table_name="wa_inbound")
    with op.batch_alter_table("wa_inbound") as batch:
        for column in ("content_enc", "outcome", "processed_at"):
            batch.drop_column(column)
    with op.batch_alter_table("wa_status") as batch:
        for column in ("error_title", "user_id_index"):
            batch.drop_column(column)
    op.drop_index("ix_outbox_recipient_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        for column in ("recipient_key", "purpose", "fallback", "hook_state"):
            batch.drop_column(column)
