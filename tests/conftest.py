"""Shared fixtures: databases (SQLite and PostgreSQL, the same tests on both), settings.

PostgreSQL tests use a fresh database per session on ``BRIDGE_TEST_POSTGRES_URL`` (default: the
machine's server on 127.0.0.1:5432). Outside CI they are skipped when no server answers; in CI
(``CI=true``) an unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from adapter.settings import Settings, load_settings
from adapter.storage.db import make_engine, upgrade

POSTGRES_ADMIN_URL = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")



@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bridge_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # any connection failure
        admin.dispose()
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {type(error).__name__}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    yield _emptied(request.getfixturevalue("postgres_url"))


def _emptied(url: str) -> str:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """A migrated, empty PostgreSQL database, for what only PostgreSQL has (roles, concurrent writers)."""
    engine = make_engine(_emptied(postgres_url))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_settings(tmp_path: Path) -> Settings:
    return load_settings(mode="demo", database_url=f"sqlite:///{tmp_path / 'bridge.db'}")
