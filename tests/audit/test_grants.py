"""PostgreSQL grants: the application's role adds audit records and cannot change or delete them;
the triggers refuse the same on both databases whoever asks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from adapter.audit.chain import chain_pending
from adapter.audit.grants import GrantError, grant_app_role
from tests.audit.chain_helpers import record_events

INSERT_EVENT = ("INSERT INTO audit_event (recorded_at, kind, action, outcome, agent) "
                "VALUES (now(), 'admin', 'E', '0', 'system') RETURNING id")


@pytest.fixture
def app_role(pg_engine: Engine) -> Iterator[str]:
    engine = pg_engine  # roles and grants are PostgreSQL's
    role = f"bridge_app_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} NOLOGIN"))
    yield role
    with engine.begin() as connection:
        connection.execute(text(f"DROP OWNED BY {role}"))
        connection.execute(text(f"DROP ROLE {role}"))


def _as(engine: Engine, role: str, statement: str) -> object:
    with engine.begin() as connection:
        connection.execute(text(f"SET LOCAL ROLE {role}"))
        return connection.execute(text(statement)).scalar()


def test_the_app_role_inserts_audit_records_but_cannot_change_or_delete_them(pg_engine: Engine, app_role: str) -> None:
    engine = pg_engine
    record_events(engine, 2)
    chain_pending(engine)
    statements = grant_app_role(engine, app_role)
    assert f"GRANT SELECT, INSERT ON audit_event TO {app_role}" in statements
    new_id = _as(engine, app_role, INSERT_EVENT)
    assert isinstance(new_id, int)
    assert _as(engine, app_role, f"INSERT INTO audit_pending (event_id) VALUES ({new_id}) RETURNING event_id") == new_id
    assert _as(engine, app_role, f"DELETE FROM audit_pending WHERE event_id = {new_id} RETURNING event_id") == new_id
    assert _as(engine, app_role, "SELECT count(*) FROM audit_chain") == 2
    for statement in ("UPDATE audit_event SET outcome = '8'", "DELETE FROM audit_event",
                      "UPDATE audit_chain SET seq = seq + 10", "DELETE FROM audit_chain",
                      "DELETE FROM audit_checkpoint", "TRUNCATE audit_event",
                      "INSERT INTO audit_purge (up_to_seq, boundary_seq, reason, at) VALUES (2, 2, 'x', now())"):
        with pytest.raises(DBAPIError, match="permission denied"):
            _as(engine, app_role, statement)
    # Ordinary tables stay writable.
    assert _as(engine, app_role, "INSERT INTO legal_hold (reason, created_by, created_at) "
                                 "VALUES ('case', 'cli:tester', now()) RETURNING id") is not None
    assert _as(engine, app_role, "UPDATE legal_hold SET released_at = now() RETURNING id") is not None


def test_granting_twice_is_harmless(pg_engine: Engine, app_role: str) -> None:
    engine = pg_engine
    grant_app_role(engine, app_role)
    grant_app_role(engine, app_role)
    with pytest.raises(DBAPIError, match="permission denied"):
        _as(engine, app_role, "DELETE FROM audit_event")


def test_grants_refuse_sqlite_and_odd_role_names(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        with pytest.raises(GrantError, match="PostgreSQL"):
            grant_app_role(engine, "bridge_app")
    else:
        with pytest.raises(GrantError, match="identifier"):
            grant_app_role(engine, "app; DROP TABLE audit_event")


@pytest.mark.parametrize("statement", ["UPDATE audit_event SET outcome = '8'", "DELETE FROM audit_event",
                                       "UPDATE audit_chain SET seq = seq + 10", "DELETE FROM audit_chain"])
def test_the_triggers_refuse_even_the_owner(engine: Engine, statement: str) -> None:
    record_events(engine, 1)
    chain_pending(engine)
    with pytest.raises(DBAPIError, match="insert-only"), engine.begin() as connection:
        connection.execute(text(statement))
