"""The OpenAPI document is one a client generator can use (valid OpenAPI 3.1, unique operation ids, a
description and documented responses on every operation, the session scheme declared and applied), and
the interactive docs are open in demo mode and behind a session otherwise, over real loopback HTTP.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from sqlalchemy.engine import Engine

from adapter.app import create_app
from adapter.audit.signing import AuditSigner
from adapter.http.api_docs import SESSION_SCHEME
from adapter.security.credentials import create_credential
from adapter.security.roles import Role
from adapter.settings import load_settings
from tests.support.asgi_server import serve_in_thread

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PRODUCTION_SECRETS = {
    "whatsapp_access_token": "EAAG-synthetic-test-token-0000", "whatsapp_app_secret": "a" * 32,
    "whatsapp_verify_token": "v" * 24, "ehr_hook_secret": "h" * 32,
    "data_encryption_key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "blind_index_key": "aW5kZXgtMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk=",
    "link_signing_key": "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
}


def demo_document() -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Duplicate Operation ID")  # FastAPI's warning, made fatal
        return create_app(load_settings(mode="demo", database_url="sqlite://", manage_subscriptions=False)).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_the_document_validates_and_every_operation_is_described() -> None:
    document = demo_document()
    validate(document)
    found = operations(document)
    assert len(found) >= 15
    duplicates = [name for name, n in Counter(op["operationId"] for _, _, op in found).items() if n > 1]
    assert duplicates == []
    for method, path, operation in found:
        assert operation.get("description"), f"{method} {path} has no description"
        assert operation.get("responses"), f"{method} {path} documents no response"


def test_the_session_scheme_is_declared_and_required_by_the_admin_and_audit_routes() -> None:
    document = demo_document()
    scheme = document["components"]["securitySchemes"][SESSION_SCHEME]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in operations(document):
        if path.startswith(("/admin/", "/audit/")):
            assert operation["security"] == [{SESSION_SCHEME: []}], f"{method} {path}"
            assert {"401", "403"} <= operation["responses"].keys(), f"{method} {path}"
    notify = document["paths"]["/ehr/notify/{key}"]["post"]
    assert notify["security"] == [{"ehrNotifySecret": []}, {"medplumSignature": []}]
    assert document["components"]["securitySchemes"]["medplumSignature"]["name"] == "X-Signature"


@pytest.fixture
def production_url(database_url: str, engine: Engine, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A production-mode app over loopback, and an API key of the integration role."""
    key_file = tmp_path / "audit-signing.pem"
    AuditSigner.generate_file(key_file)
    settings = load_settings(mode="production", database_url=database_url, manage_subscriptions=False,
                             audit_signing_key_file=str(key_file), **PRODUCTION_SECRETS)
    key = create_credential(engine, "docs-reader", Role.INTEGRATION, "cli:test")
    with serve_in_thread(create_app(settings)) as url:
        yield url, key


def test_the_interactive_docs_need_a_session_outside_demo_mode(production_url: tuple[str, str]) -> None:
    url, key = production_url
    with httpx.Client(base_url=url, timeout=10) as http:
        refused = http.get("/docs")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        token = http.post("/auth/login", headers={"Authorization": f"Bearer {key}"}).json()["token"]
        served = http.get("/docs", headers={"Authorization": f"Bearer {token}"})
        assert served.status_code == 200 and "swagger-ui" in served.text and "/openapi.json" in served.text
        assert http.get("/openapi.json").json()["info"]["title"]  # the document stays public, for generators


def test_the_interactive_docs_are_open_in_demo_mode(tmp_path: Path) -> None:
    app = create_app(load_settings(mode="demo", database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
                                   manage_subscriptions=False))
    with serve_in_thread(app) as url:
        response = httpx.get(f"{url}/docs", timeout=10)
    assert response.status_code == 200 and "swagger-ui" in response.text
