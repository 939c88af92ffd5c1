"""The auditor API over real loopback HTTP, on both databases: who opened a patient's links in a
date range, from where, with what outcome; every query, export and resolve is itself audited."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.csv_export import verify_export_bytes
from adapter.audit.signing import AuditSigner
from adapter.audit.tables import AuditEvent
from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.http.admin_api import build_admin_router
from adapter.http.audit_api import MANIFEST_HEADER, build_audit_router
from adapter.security.access import AccessControl
from adapter.security.credentials import create_credential
from adapter.security.roles import Role
from adapter.storage.db import transaction
from tests.support.asgi_server import serve_in_thread

OBSERVER = "bridge.hospital.example"


class FakeDirectory:
    """An EHR's Patient directory in memory (synthetic people only)."""

    def __init__(self) -> None:
        self.people = {"Patient/example-1": {"name": [{"family": "Example", "given": ["Alex"]}],
                                             "identifier": [{"system": "urn:mrn.example", "value": "MRN-EX-1"}]}}

    async def person(self, patient_ref: str) -> dict[str, Any]:
        return self.people[patient_ref]


class Api:
    def __init__(self, engine: Engine, url: str, signer: AuditSigner) -> None:
        self.engine, self.url, self.signer = engine, url, signer
        self.http = httpx.Client(base_url=url, timeout=10)

    def session_for(self, role: Role, name: str | None = None) -> dict[str, str]:
        """Creates a credential, logs in with it; returns the Authorization header."""
        key = create_credential(self.engine, name or f"{role.value}-user", role, "cli:test")
        response = self.http.post("/auth/login", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def events(self, kind: Kind) -> list[AuditEvent]:
        with Session(self.engine) as session:
            return list(session.exec(select(AuditEvent).where(col(AuditEvent.kind) == kind.value)
                                     .order_by(col(AuditEvent.id))))


@contextmanager
def running_api(engine: Engine) -> Iterator[Api]:
    access = AccessControl(engine, session_minutes=15)
    signer = AuditSigner.throwaway()
    app = FastAPI()
    app.include_router(build_audit_router(engine, access, observer=OBSERVER, signer=signer,
                                          directory=FakeDirectory()))
    app.include_router(build_admin_router(engine, access))
    with serve_in_thread(app) as url:
        api = Api(engine, url, signer)
        try:
            yield api
        finally:
            api.http.close()


@pytest.fixture
def api(engine: Engine) -> Iterator[Api]:
    with running_api(engine) as running:
        yield running


def _link_accesses(engine: Engine) -> None:
    with transaction(engine) as session:
        for day, patient, outcome, source in [(9, "Patient/example-1", Outcome.SUCCESS, "192.0.2.1"),
                                              (10, "Patient/example-1", Outcome.SUCCESS, "192.0.2.2"),
                                              (11, "Patient/example-1", Outcome.MINOR_FAILURE, "198.51.100.3"),
                                              (11, "Patient/example-2", Outcome.SUCCESS, "192.0.2.4"),
                                              (14, "Patient/example-1", Outcome.SUCCESS, "192.0.2.5")]:
            record(session, AuditEntry(Kind.LINK_ACCESS, Action.READ, outcome, agent="patient", source=source,
                                       patient_ref=patient, entity_ref=f"link/{day}"),
                   at=datetime(2026, 11, day, 15, tzinfo=UTC))


def test_who_opened_a_patients_links_in_a_date_range_and_the_query_is_audited(api: Api) -> None:
    _link_accesses(api.engine)
    auth = api.session_for(Role.AUDITOR, "alice")
    response = api.http.get("/audit/AuditEvent", headers=auth, params=[
        ("patient", "Patient/example-1"), ("date", "ge2026-11-10"), ("date", "le2026-11-11"), ("type", "link-access")])
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 2
    seen = [(entry["resource"]["recorded"][:10], entry["resource"]["agent"][0]["network"]["address"],
             entry["resource"]["outcome"]) for entry in bundle["entry"]]
    assert seen == [("2026-11-10", "192.0.2.2", "0"), ("2026-11-11", "198.51.100.3", "4")]
    accesses = api.events(Kind.AUDIT_ACCESS)
    assert len(accesses) == 1
    access = accesses[0]
    assert (access.agent, access.agent_role, access.source) == ("user:alice", "auditor", "127.0.0.1")
    assert access.patient_ref == "Patient/example-1"
    detail = json.loads(access.detail or "{}")
    assert detail["op"] == "search" and detail["q.type"] == "link-access"
    assert {detail["q.date"], detail["q.date.2"]} == {"ge20261110", "le20261111"}


def test_paging_links_walk_every_match(api: Api) -> None:
    _link_accesses(api.engine)
    auth = api.session_for(Role.PRIVACY_OFFICER, "pat")
    url: str | None = "/audit/AuditEvent?type=link-access&_count=2"
    ids: list[str] = []
    while url:
        bundle = api.http.get(url, headers=auth).json()
        assert bundle["total"] == 5
        ids += [entry["resource"]["id"] for entry in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert len(ids) == 5 == len(set(ids))
    assert len(api.events(Kind.AUDIT_ACCESS)) == 3  # every page read is recorded


def test_an_unknown_parameter_is_a_400_operation_outcome(api: Api) -> None:
    auth = api.session_for(Role.AUDITOR)
    response = api.http.get("/audit/AuditEvent?name=Alex", headers=auth)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "name" in response.json()["issue"][0]["diagnostics"]


def test_the_csv_download_carries_a_manifest_that_detects_a_changed_byte(api: Api) -> None:
    _link_accesses(api.engine)
    auth = api.session_for(Role.AUDITOR)
    response = api.http.get("/audit/export.csv?type=link-access", headers=auth)
    assert response.status_code == 200, response.text
    manifest = base64.urlsafe_b64decode(response.headers[MANIFEST_HEADER])
    name = response.headers["content-disposition"].split('filename="')[1].rstrip('"')
    assert verify_export_bytes(response.content, name, manifest, api.signer.public) == (True, None)
    assert json.loads(manifest)["rows"] == 5
    changed = response.content.replace(b"198.51.100.3", b"198.51.100.4")
    assert verify_export_bytes(changed, name, manifest, api.signer.public)[0] is False
    exports = [json.loads(e.detail or "{}") for e in api.events(Kind.AUDIT_ACCESS)]
    assert exports == [{"op": "export", "q.type": "link-access"}]


def test_a_privacy_officer_resolves_with_a_reason_and_it_is_audited(api: Api) -> None:
    auth = api.session_for(Role.PRIVACY_OFFICER, "olivia")
    response = api.http.post("/audit/resolve", headers=auth,
                             json={"patient": "Patient/example-1", "reason": "complaint 2026-17 review"})
    assert response.status_code == 200, response.text
    assert response.json()["name"][0]["family"] == "Example"
    resolves = api.events(Kind.RESOLVE)
    assert [(r.agent, r.patient_ref, r.purpose, r.outcome) for r in resolves] == [
        ("user:olivia", "Patient/example-1", "complaint 2026-17 review", "0")]


@pytest.mark.parametrize("body", [{"patient": "Patient/example-1"}, {"patient": "Patient/example-1", "reason": ""},
                                  {"patient": "Patient/example-1", "reason": "   "}])
def test_a_resolve_without_a_reason_is_refused(api: Api, body: dict[str, str]) -> None:
    auth = api.session_for(Role.PRIVACY_OFFICER)
    assert api.http.post("/audit/resolve", headers=auth, json=body).status_code == 422
    assert api.events(Kind.RESOLVE) == []


def test_logout_ends_the_session(api: Api) -> None:
    auth = api.session_for(Role.AUDITOR)
    assert api.http.post("/auth/logout", headers=auth).json() == {"ended": True}
    assert api.http.get("/audit/AuditEvent", headers=auth).status_code == 401
    ops = [json.loads(e.detail or "{}").get("op") for e in api.events(Kind.LOGIN)]
    assert ops == ["login", "logout"]
