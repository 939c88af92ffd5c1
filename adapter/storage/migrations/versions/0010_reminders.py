"""Reminders and the satisfaction survey: reminders and surveys are outbox rows; each Appointment
version looks up its reminders by resource (adapter.scheduling.reminders), so index that.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_resource_rule", "outbox", ["resource_ref", "rule_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_resource_rule", table_name="outbox")
