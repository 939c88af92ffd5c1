"""An index of the outbox by patient and rule: the decide step reads each batch's patients' live
reminders (same-day rule, daily cap; adapter.scheduling.batch_facts), and STOP suppresses a patient's
queued messages; without it both walk every sent row of the history.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_patient_rule", "outbox", ["patient_ref", "rule_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_patient_rule", table_name="outbox")
