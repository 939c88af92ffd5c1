"""The start of the appointment an outbox message speaks of (adapter.outbox.appointment_gate): a
confirmation, reminder or notice held back past that start is suppressed at claim, not sent. Rows
queued before have none (a reminder's start is in its key, which the reminder gate reads).

And the 24-hour window never runs from a time after the message reached us
(adapter.recipients.contacts.written_at): a contact whose last inbound time is later than the row's last
change was given a sender's future timestamp; the last change, which followed the receipt, stands in.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql import sqltypes

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("appointment_start", sqltypes.UTCDateTime(), nullable=True))
    op.execute("UPDATE wa_contact SET last_inbound_at = updated_at WHERE last_inbound_at > updated_at")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("appointment_start")
