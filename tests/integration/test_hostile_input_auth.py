"""Hostile and malformed input to the login, auditor and admin APIs over real loopback HTTP, on SQLite
and PostgreSQL: always a clear 4xx, never a 5xx; failed logins throttled per address with a bounded
audit trail (the first failure in full, then one summary entry per throttle window).

The throttle's clock is a settable one (a real :class:`LoginThrottle`, real HTTP, real database), so
a block can be waited out without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.signing import AuditSigner
from adapter.audit.tables import AuditEvent
from adapter.http.admin_api import build_admin_router
from adapter.http.audit_api import build_audit_router
from adapter.ops.alerts import open_alerts, raise_alert
from adapter.security.access import AccessControl
from adapter.security.credentials import create_credential
from adapter.security.login_throttle import LoginThrottle
from adapter.security.roles import Role
from adapter.storage.db import transaction
from tests.support.asgi_server import serve_in_thread


class SettableClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    engine: Engine
    http: httpx.Client
    clock: SettableClock

    def login(self, key: str) -> httpx.Response:
        return self.http.post("/auth/login", json={"key": key})

    def session_for(self, role: Role, name: str) -> dict[str, str]:
        response = self.login(create_credential(self.engine, name, role, "cli:test"))
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def login_audit(self) -> list[tuple[str, dict[str, object]]]:
        """(kind, detail) of every login and security-alert entry about logins, in order."""
        with Session(self.engine) as session:
            rows = session.exec(select(AuditEvent).where(col(AuditEvent.kind).in_(["login", "security-alert"]))
                                .order_by(col(AuditEvent.id))).all()
        found = [(row.kind, json.loads(row.detail or "{}")) for row in rows]
        return [(kind, detail) for kind, detail in found if detail.get("op") == "login"]


@pytest.fixture
def api(engine: Engine) -> Iterator[Api]:
    clock = SettableClock()
    access = AccessControl(engine, session_minutes=15)
    app = FastAPI()
    app.include_router(build_audit_router(engine, access, observer="bridge.hospital.example",
                                          signer=AuditSigner.throwaway(), throttle=LoginThrottle(clock=clock)))
    app.include_router(build_admin_router(engine, access))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Api(engine, http, clock)


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"[" * 5_000, 400, "nested too deeply"),
    (b'{"key": ' + b"[" * 5_000, 400, "nested too deeply"),
    (b"[" * 100_000, 413, "over 16384 bytes"),  # no login request is that large: refused before parsing
    (b'{"key": "\\ud800"}', 400, "not an API key"),  # a lone surrogate: valid JSON, no valid text
    (b'{"key": 42}', 400, "must be a string"),
    (b'{"key": ', 400, "not JSON"),
])
def test_a_malformed_login_body_is_a_4xx_and_looks_nothing_up(api: Api, body: bytes, status: int, says: str) -> None:
    response = api.http.post("/auth/login", content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert api.login_audit() == []  # refused before any key was looked up or counted


def test_failed_logins_are_throttled_and_audited_in_bounded_form(api: Api) -> None:
    key = create_credential(api.engine, "alice", Role.AUDITOR, "cli:test")
    codes = [api.login(f"wrong-key-{n}").status_code for n in range(5)]
    assert codes == [401, 401, 401, 401, 429]  # the fifth failure in a minute blocks the address
    refused = [api.login(candidate) for candidate in ["wrong-key-5"] * 9 + [key]]
    assert {r.status_code for r in refused} == {429}  # even the right key is not checked while blocked
    assert refused[-1].headers["Retry-After"] == "60"
    assert api.login_audit() == [
        ("login", {"op": "login", "reason": "unknown"}),  # the first failure, in full
        ("security-alert", {"op": "login", "reason": "unknown"}),
        ("security-alert", {"op": "login", "reason": "throttled", "failures": 4, "refused": 0,
                            "blocked_seconds": 60}),  # one summary for the throttle window
    ]

    api.clock.now += 61  # the block is over; five more failures block it for twice as long
    codes = [api.login(f"wrong-key-{n}").status_code for n in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    for _ in range(50):
        assert api.login("wrong-key").headers["Retry-After"] == "120"
    summaries = [detail for kind, detail in api.login_audit()[3:]]
    assert summaries == [{"op": "login", "reason": "throttled", "failures": 5, "refused": 10,
                          "blocked_seconds": 120}]  # 65 more attempts, one more audit row

    api.clock.now += 121
    assert api.login(key).status_code == 200  # the key works once the block is over
    assert api.login_audit()[4:] == [  # the attempts refused since the last summary are summarised
        ("security-alert", {"op": "login", "reason": "repeated", "failures": 0, "refused": 50}),
        ("login", {"op": "login"})]


def test_an_alert_id_no_row_can_have_is_a_404(api: Api) -> None:
    admin = api.session_for(Role.ADMIN, "admin")
    with transaction(api.engine) as session:
        raise_alert(session, "synthetic:alert", "synthetic", "a synthetic alert")
    [alert] = open_alerts(api.engine)
    for alert_id in (2**70, 2**64, 2**40, 2**31, 0, -1):
        response = api.http.post(f"/admin/alerts/{alert_id}/ack", headers=admin)
        assert response.status_code == 404, (alert_id, response.text)
    assert api.http.post(f"/admin/alerts/{alert.id}/ack", headers=admin).json() == {"acknowledged": 1}


def test_admin_and_auditor_bodies_are_read_only_after_authentication(api: Api) -> None:
    nested = b'{"reason": ' + b"[" * 5_000
    for path in ("/admin/sending/pause", "/admin/credentials", "/audit/resolve"):
        assert api.http.post(path, content=nested, headers=JSON).status_code == 401  # not even parsed
    admin = {**api.session_for(Role.ADMIN, "admin"), **JSON}
    cases = [(nested, 400, "nested too deeply"),
             (b"{" * 20_000, 413, "over 16384 bytes"),
             (b'{"reason": "maintenance \\ud800"}', 422, "valid string"),
             (b'{"reason": "line\\u0000two"}', 422, "match pattern"),
             (b'{"reason": "forged\\nlog line"}', 422, "match pattern")]
    for body, status, says in cases:
        response = api.http.post("/admin/sending/pause", content=body, headers=admin)
        assert response.status_code == status, (body[:40], response.text)
        assert says in response.text and "\\ud800" not in response.text  # the input is never echoed
    response = api.http.post("/admin/credentials", content=b'{"name": "bob\\udfff", "role": "auditor"}',
                             headers=admin)
    assert response.status_code == 422
    assert api.http.post("/admin/sending/pause", json={"reason": "maintenance"}, headers=admin).status_code == 200


def test_nul_in_a_query_or_path_is_a_4xx(api: Api) -> None:
    auditor = api.session_for(Role.AUDITOR, "auditor")
    for query in ("patient=Patient/a%00b", "agent=%00", "entity=x%00"):
        response = api.http.get(f"/audit/AuditEvent?{query}", headers=auditor)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert api.http.get("/audit/export.csv?agent=%00", headers=auditor).status_code == 400
    admin = api.session_for(Role.ADMIN, "admin")
    assert api.http.delete("/admin/credentials/a%00b", headers=admin).status_code == 404
    officer = api.session_for(Role.PRIVACY_OFFICER, "officer")
    response = api.http.post("/audit/resolve", headers=officer,
                             json={"patient": "Patient/example-1", "reason": "review\u0000"})
    assert response.status_code == 422


@pytest.mark.parametrize("query", [
    "date=9999-12-31",  # the day's end is past the last date Python has
    "date=lt9999-12-31T23:59:59.999999Z",
    "date=ge0001-01-01T00:00:00%2B14:00",  # before 0001-01-01 in UTC
    "patient=Patient/" + "0" * 200,  # longer than any stored reference (and the query's own audit row)
    "agent=" + "x" * 201,
    "type=" + ",".join(["link-access"] * 40),
])
def test_a_search_value_no_record_can_match_is_a_400(api: Api, query: str) -> None:
    """Found by the fuzzers (tests/fuzz): each of these was a 500."""
    auditor = api.session_for(Role.AUDITOR, "auditor")
    for path in ("/audit/AuditEvent", "/audit/export.csv"):
        response = api.http.get(f"{path}?{query}", headers=auditor)
        assert response.status_code == 400, (path, query[:40], response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert api.http.get("/audit/AuditEvent?date=9999-12-30", headers=auditor).status_code == 200
