"""FhirAuth: the headers each scheme sends, checked on the wire and against a real sekmet that
requires them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapter.settings import load_settings
from ehr.auth import FhirAuth
from ehr.auth_settings import auth_from_settings
from ehr.client import FhirClient
from ehr.errors import FhirAuthError
from tests.support.fhir_server import RunningFhirServer, start_fhir_server

USER, PASSWORD, TOKEN = "synthetic-user", "synthetic-password-1", "synthetic-token-1"


async def sent_authorization(auth: FhirAuth) -> str | None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"resourceType": "CapabilityStatement"})

    async with FhirClient("https://ehr.example/fhir", auth, 5.0, httpx.MockTransport(handler)) as client:
        await client.capabilities()
        await client.capabilities()
    assert len(set(seen)) == 1
    return seen[0]


async def test_basic_sends_rfc7617_credentials() -> None:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert await sent_authorization(FhirAuth.basic(USER, PASSWORD)) == expected


async def test_bearer_sends_the_token() -> None:
    assert await sent_authorization(FhirAuth.bearer(TOKEN)) == f"Bearer {TOKEN}"


async def test_none_sends_no_authorization() -> None:
    assert await sent_authorization(FhirAuth.none()) is None


def test_built_from_settings() -> None:
    basic = load_settings(mode="demo", fhir_auth="basic", fhir_username=USER, fhir_password=PASSWORD)
    bearer = load_settings(mode="demo", fhir_auth="bearer", fhir_bearer_token=TOKEN)
    assert auth_from_settings(basic).scheme == "basic"
    assert auth_from_settings(bearer).scheme == "bearer"
    assert auth_from_settings(load_settings(mode="demo")).scheme == "none"


def test_repr_hides_credentials() -> None:
    assert PASSWORD not in repr(FhirAuth.basic(USER, PASSWORD))
    assert TOKEN not in repr(FhirAuth.bearer(TOKEN))


@pytest.mark.parametrize("bad", [lambda: FhirAuth.basic("a:b", "x"), lambda: FhirAuth.bearer("two words")])
def test_malformed_credentials_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    auth = {"types": ["basic", "bearer"], "users": {USER: PASSWORD}, "tokens": [TOKEN]}
    with start_fhir_server(Path(tmp_path_factory.mktemp("guarded")), server_auth=auth) as server:
        yield server


@pytest.mark.fhir
@pytest.mark.parametrize("auth", [FhirAuth.basic(USER, PASSWORD), FhirAuth.bearer(TOKEN)], ids=["basic", "bearer"])
async def test_real_server_accepts_our_credentials(guarded_server: RunningFhirServer, auth: FhirAuth) -> None:
    async with FhirClient(guarded_server.base_url, auth, 5.0) as client:
        assert await client.search("Location", [("name", "nobody")]) == []


@pytest.mark.parametrize(
    "auth", [FhirAuth.none(), FhirAuth.basic(USER, "wrong"), FhirAuth.bearer("wrong")],
    ids=["none", "basic", "bearer"],
)
@pytest.mark.fhir
async def test_real_server_refusal_is_an_auth_error(guarded_server: RunningFhirServer, auth: FhirAuth) -> None:
    async with FhirClient(guarded_server.base_url, auth, 5.0) as client:
        with pytest.raises(FhirAuthError) as caught:
            await client.search("Location", [("name", "nobody")])
    assert caught.value.status_code == 401
