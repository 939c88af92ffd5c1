"""The outbox body is sealed under the data key (adapter.outbox.encoding): what the service reads
without the key — the body's type, its template's name and language — moves to plain columns, filled
here from the bodies written before (clear JSON). ``bridge keys reencrypt`` seals those bodies.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_PAGE = 1000


def upgrade() -> None:
    op.add_column("outbox", sa.Column("body_type", sa.String(16), nullable=True))
    op.add_column("outbox", sa.Column("template_name", sa.String(512), nullable=True))
    op.add_column("outbox", sa.Column("template_language", sa.String(16), nullable=True))
    outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("payload", sa.Text),
                      sa.column("body_type", sa.String), sa.column("template_name", sa.String),
                      sa.column("template_language", sa.String))
    bind = op.get_bind()
    last = 0
    while True:  # in pages by id: a long outbox is never held in memory at once
        rows = bind.execute(sa.select(outbox.c.id, outbox.c.payload).where(
            outbox.c.id > last, outbox.c.payload.is_not(None)).order_by(outbox.c.id).limit(_PAGE)).all()
        if not rows:
            return
        last = rows[-1].id
        values = [{"row_id": row.id, **_columns(row.payload)} for row in rows]
        bind.execute(sa.update(outbox).where(outbox.c.id == sa.bindparam("row_id")).values(
            body_type=sa.bindparam("body_type"), template_name=sa.bindparam("template_name"),
            template_language=sa.bindparam("template_language")), values)


def _columns(payload: str) -> dict[str, str | None]:
    """As adapter.outbox.encoding.body_columns (a migration keeps its own copy: the code moves on)."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    template = body.get("template") if body.get("type") == "template" else None
    template = template if isinstance(template, dict) else {}
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    return {"body_type": str(body["type"])[:16] if body.get("type") else None,
            "template_name": str(template["name"])[:512] if template.get("name") else None,
            "template_language": str(code)[:16] if code else None}


def downgrade() -> None:
    # Bodies sealed since stay sealed: an earlier version cannot read them (re-queue, or purge them).
    with op.batch_alter_table("outbox") as batch:
        for column in ("template_language", "template_name", "body_type"):
            batch.drop_column(column)
