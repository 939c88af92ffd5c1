"""Portal link lifecycle: the message a link was sent in, and a row per request to a link.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("link_token", sa.Column("message_key", sqltypes.AutoString(300), nullable=True))
    op.create_index("ix_link_token_message_key", "link_token", ["message_key"])
    op.create_table(
        "link_request",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sqltypes.AutoString(16), nullable=False),
        sa.Column("client", sqltypes.AutoString(64), nullable=True),
        sa.Column("ua_class", sqltypes.AutoString(16), nullable=False),
        sa.Column("method", sqltypes.AutoString(8), nullable=False),
        sa.Column("at", sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_link_request_link_id", "link_request", ["link_id"])
    op.create_index("ix_link_request_at", "link_request", ["at"])
    op.create_index("ix_link_request_client_at", "link_request", ["client", "at"])


def downgrade() -> None:
    op.drop_index("ix_link_request_client_at", table_name="link_request")
    op.drop_index("ix_link_request_at", table_name="link_request")
    op.drop_index("ix_link_request_link_id", table_name="link_request")
    op.drop_table("link_request")
    op.drop_index("ix_link_token_message_key", table_name="link_token")
    with op.batch_alter_table("link_token") as batch:
        batch.drop_column("message_key")
