"""The role matrix over real loopback HTTP on both databases, refused and forged sessions recorded
as security alerts, credentials kept only as hashes, and the credentials CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from adapter.audit.tables import AuditEvent
from adapter.audit.trail import Kind
from adapter.cli.credentials import credentials_app
from adapter.security.credentials import create_credential, digest
from adapter.security.roles import Role
from adapter.security.tables import ApiCredential, ApiSession
from adapter.storage.db import make_engine, table_of, transaction, upgrade, utcnow
from tests.audit.test_audit_api import Api, running_api

READ, EXPORT, RESOLVE, STATUS, PAUSE = "read", "export", "resolve", "status", "pause"
REQUESTS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    READ: ("GET", "/audit/AuditEvent", None),
    EXPORT: ("GET", "/audit/export.csv", None),
    RESOLVE: ("POST", "/audit/resolve", {"patient": "Patient/example-1", "reason": "complaint review"}),
    STATUS: ("GET", "/admin/status", None),
    PAUSE: ("POST", "/admin/sending/pause", {"reason": "maintenance"}),
}
MATRIX = {
    Role.AUDITOR: {READ: 200, EXPORT: 200, RESOLVE: 403, STATUS: 403, PAUSE: 403},
    Role.PRIVACY_OFFICER: {READ: 200, EXPORT: 403, RESOLVE: 200, STATUS: 403, PAUSE: 403},
    Role.ADMIN: {READ: 403, EXPORT: 403, RESOLVE: 403, STATUS: 200, PAUSE: 200},
    Role.OPERATOR: {READ: 403, EXPORT: 403, RESOLVE: 403, STATUS: 200, PAUSE: 403},
    Role.INTEGRATION: {READ: 403, EXPORT: 403, RESOLVE: 403, STATUS: 403, PAUSE: 403},
}


@pytest.fixture
def api(engine: Engine) -> Iterator[Api]:
    with running_api(engine) as running:
        yield running


def _alerts(api: Api) -> list[dict[str, str]]:
    return [{"outcome": e.outcome, **json.loads(e.detail or "{}")} for e in api.events(Kind.SECURITY_ALERT)]


@pytest.mark.parametrize("role", list(Role))
def test_role_matrix(api: Api, role: Role) -> None:
    auth = api.session_for(role)
    for name, expected in MATRIX[role].items():
        method, path, body = REQUESTS[name]
        response = api.http.request(method, path, headers=auth, json=body)
        assert response.status_code == expected, (role, path, response.text)
    refused = sum(1 for code in MATRIX[role].values() if code == 403)
    alerts = _alerts(api)
    assert len(alerts) == refused and all(a["outcome"] == "4" and a["reason"] == "role" for a in alerts)


def test_missing_forged_and_expired_tokens_get_401_and_are_security_alerts(api: Api) -> None:
    assert api.http.get("/audit/AuditEvent").status_code == 401
    assert api.http.get("/audit/AuditEvent", headers={"Authorization": "Bearer forged-token-value"}).status_code == 401
    auth = api.session_for(Role.AUDITOR)
    with transaction(api.engine) as session:
        session.execute(update(table_of(ApiSession)).values(expires_at=utcnow() - timedelta(minutes=1)))
    assert api.http.get("/audit/AuditEvent", headers=auth).status_code == 401
    alerts = _alerts(api)
    assert [a["reason"] for a in alerts] == ["missing", "unknown", "expired"]
    assert all(a["outcome"] == "8" and a["path"] == "/audit/AuditEvent" for a in alerts)
    everything = " ".join(str(e.detail) for e in api.events(Kind.SECURITY_ALERT))
    assert "forged-token-value" not in everything and auth["Authorization"][7:] not in everything


def test_an_unknown_or_revoked_key_cannot_log_in(api: Api) -> None:
    assert api.http.post("/auth/login", json={"key": "not-a-key"}).status_code == 401
    admin = api.session_for(Role.ADMIN)
    created = api.http.post("/admin/credentials", headers=admin, json={"name": "bob", "role": "auditor"})
    assert created.status_code == 201
    key = created.json()["key"]
    bob = api.http.post("/auth/login", json={"key": key})
    assert bob.status_code == 200
    assert api.http.delete("/admin/credentials/bob", headers=admin).status_code == 200
    assert api.http.post("/auth/login", json={"key": key}).status_code == 401
    revoked_session = {"Authorization": f"Bearer {bob.json()['token']}"}
    assert api.http.get("/audit/AuditEvent", headers=revoked_session).status_code == 401  # sessions end too
    failures = [json.loads(e.detail or "{}") for e in api.events(Kind.LOGIN) if e.outcome != "0"]
    assert [f["reason"] for f in failures] == ["unknown", "revoked"]
    assert [a["reason"] for a in _alerts(api)] == ["unknown", "revoked", "ended"]
    admin_ops = [json.loads(e.detail or "{}")["op"] for e in api.events(Kind.ADMIN)]
    assert "credential-create" in admin_ops and "credential-revoke" in admin_ops


def test_the_database_holds_no_key_or_token_in_clear(api: Api) -> None:
    key = create_credential(api.engine, "carol", Role.AUDITOR, "cli:test")
    token = api.http.post("/auth/login", json={"key": key}).json()["token"]
    with Session(api.engine) as session:
        credential = session.exec(select(ApiCredential)).one()
        stored_session = session.exec(select(ApiSession)).one()
        events = session.exec(select(AuditEvent)).all()
    assert credential.secret_hash == digest(key) and stored_session.token_hash == digest(token)
    dump = repr([credential.model_dump(), stored_session.model_dump(), [e.model_dump() for e in events]])
    assert key not in dump and token not in dump
    assert key.encode() not in credential.secret_hash and token.encode() not in stored_session.token_hash


def test_credentials_cli_creates_lists_and_revokes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    runner = CliRunner()
    created = runner.invoke(credentials_app, ["create", "dana", "--role", "auditor"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert len(key) >= 43
    assert "dana\tauditor\tactive" in runner.invoke(credentials_app, ["list"]).output
    assert runner.invoke(credentials_app, ["create", "dana", "--role", "admin"]).exit_code == 1
    assert runner.invoke(credentials_app, ["revoke", "dana"]).exit_code == 0
    assert "dana\tauditor\trevoked" in runner.invoke(credentials_app, ["list"]).output
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine) as session:
        admin = session.exec(select(AuditEvent).where(AuditEvent.kind == Kind.ADMIN.value)).all()
    assert [json.loads(e.detail or "{}")["op"] for e in admin] == [
        "credential-create", "credential-list", "credential-revoke", "credential-list"]
    assert all(e.agent.startswith("cli:") for e in admin)
    engine.dispose()
