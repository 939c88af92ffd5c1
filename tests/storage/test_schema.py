"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import adapter.schema  # noqa: F401 - registers the tables
from adapter.storage.db import make_engine, upgrade


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    # alembic_version is the migrations' own bookkeeping, not a model.
    relevant = [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert relevant == []
