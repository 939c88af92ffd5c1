"""The service under fuzzing: the real app (``create_app``, lifespan on) over real loopback HTTP on its
own PostgreSQL database (the stricter of the two: NUL in text, 4-byte integer keys), one per package
run, with a live session for each role so the fuzzers get past authentication into the handlers.

``BRIDGE_FUZZ_EXAMPLES`` sets how many examples each property and each route gets (default 25, which
keeps the package under 90 s on two shared cores); the runs are derandomized, so a given count always
sends the same requests.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from adapter.app import create_app
from adapter.security.credentials import create_credential
from adapter.security.roles import Role
from adapter.service import Service
from adapter.settings import Settings, load_settings
from ehr.hook_secrets import derive_secret
from tests.support.asgi_server import serve_in_thread

# Throttles and probe limits count per client address; uvicorn takes X-Forwarded-For from loopback, so a
# property sends each example from a new documentation address (2001:db8::/32, RFC 3849: no real host)
# to keep reaching the handler.
_address_numbers = itertools.count(1)


def next_address() -> str:
    return f"2001:db8::{next(_address_numbers):x}"
FUZZ_EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "25"))

# Deterministic (derandomize), no per-example deadline (a shared CI core is slow now and then), no
# example database (nothing is replayed from an earlier run: what runs is what the seed gives).
FUZZ_SETTINGS = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much,
                                                HealthCheck.function_scoped_fixture])


def fuzz_settings(database_url: str) -> Settings:
    """Demo settings; the EHR is unreachable (no notification is ever read back, none needs to be)."""
    return load_settings(mode="demo", database_url=database_url, manage_subscriptions=False,
                         whatsapp_sync_templates=False, fhir_base_url="http://127.0.0.1:9/fhir")


@dataclass
class Running:
    """The running service: its root URL, a client, and what a legitimate caller knows."""

    url: str
    http: httpx.Client
    engine: Engine
    settings: Settings
    core: Service
    sessions: dict[Role, dict[str, str]] = field(default_factory=dict)  # Authorization header per role

    def ehr_headers(self, key: str = "appointment") -> dict[str, str]:
        secret = derive_secret(self.settings.ehr_hook_secret.get_secret_value().encode(), key)
        return {"Authorization": f"Bearer {secret}", "Content-Type": "application/fhir+json"}

    @property
    def app_secret(self) -> bytes:
        return self.settings.whatsapp_app_secret.get_secret_value().encode()

    def assert_serving(self) -> None:
        """The service still answers: health 200, and an admin session still works."""
        assert self.http.get("/health").status_code == 200
        response = self.http.get("/admin/status", headers=self.sessions[Role.ADMIN])
        assert response.status_code == 200, response.text


@pytest.fixture(scope="package")
def fuzz_database(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of its own (the shared test database is emptied by other tests)."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"bridge_fuzz_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="package")
def service(fuzz_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings = fuzz_settings(fuzz_database)
    app = create_app(settings)
    engine = app.state.service.engine
    with serve_in_thread(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=60) as http:
        running = Running(url, http, engine, settings, app.state.service)
        for role in Role:
            key = create_credential(engine, f"fuzz-{role.value}", role, "cli:test")
            response = http.post("/auth/login", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            running.sessions[role] = {"Authorization": f"Bearer {response.json()['token']}"}
        yield running
