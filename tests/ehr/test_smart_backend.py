"""SMART Backend Services against the real sekmet server acting as the token server
(https://hl7.org/fhir/smart-app-launch/backend-services.html): RS384 and ES384 assertions, the
token cache, refresh on expiry and on 401, a refused key, discovery fallback, settings and CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli.smart import smart_app
from adapter.settings import SettingsError, load_settings
from ehr.auth_settings import auth_from_settings
from ehr.client import FhirClient
from ehr.errors import FhirAuthError, FhirUnavailableError
from ehr.smart import SmartAuthError, SmartBackendAuth, SmartTokenSource, SmartTokenUnavailableError
from ehr.smart_keys import SigningKey, SmartKeyError, generate_signing_key, load_signing_key
from tests.support.fhir_server import RunningFhirServer, free_port, start_fhir_server

pytestmark = pytest.mark.fhir

RS_KEY = generate_signing_key("RS384")
ES_KEY = generate_signing_key("ES384")
SCOPE = "system/Patient.cruds system/Appointment.rs"
PATIENT = {"resourceType": "Patient", "active": True, "name": [{"family": "Synthetic", "given": ["Example"]}]}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _server_auth(token_lifetime: int) -> dict[str, object]:
    return {"types": ["smart"], "token_lifetime": token_lifetime, "smart_clients": [
        {"client_id": "bridge-rs", "jwks": RS_KEY.jwks(), "scopes": "system/*.cruds"},
        {"client_id": "bridge-es", "jwks": ES_KEY.jwks(), "scopes": "system/Patient.cruds"},
    ]}


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    with start_fhir_server(Path(tmp_path_factory.mktemp("smart")), server_auth=_server_auth(3600)) as server:
        yield server


@pytest.fixture(scope="module")
def short_lived_ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    """Issues tokens that expire after one second (the EHR's view, not ours)."""
    with start_fhir_server(Path(tmp_path_factory.mktemp("smart-short")), server_auth=_server_auth(1)) as server:
        yield server


def _source(server: RunningFhirServer, client_id: str = "bridge-rs", key: SigningKey = RS_KEY,
            clock: Clock | None = None, **kwargs: object) -> SmartTokenSource:
    return SmartTokenSource(server.base_url, client_id, key, SCOPE, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("client_id", "key"), [("bridge-rs", RS_KEY), ("bridge-es", ES_KEY)], ids=["RS384", "ES384"])
async def test_token_obtained_and_fhir_read_succeeds(ehr: RunningFhirServer, client_id: str, key: SigningKey) -> None:
    source = _source(ehr, client_id, key)
    async with FhirClient(ehr.base_url, SmartBackendAuth(source), 5.0) as fhir:
        created = await fhir.create(PATIENT)
        read = await fhir.read("Patient", created["id"])
    assert read["id"] == created["id"]
    token = await source.token()
    assert source.tokens_fetched == 1
    # The EHR grants the requested scopes its registration covers (bridge-es: Patient only).
    expected = {"system/Patient.cruds"} if client_id == "bridge-es" else set(SCOPE.split())
    assert set(token.scopes) == expected
    assert token.expires_in == 3600
    assert await source.token_endpoint() == f"{ehr.root_url}/auth/token"  # discovered, not configured


async def test_one_token_for_many_and_concurrent_reads(ehr: RunningFhirServer) -> None:
    source = _source(ehr)
    async with FhirClient(ehr.base_url, SmartBackendAuth(source), 5.0) as fhir:
        patient = await fhir.create(PATIENT)
        reads = await asyncio.gather(*(fhir.read("Patient", patient["id"]) for _ in range(20)))
        for _ in range(5):
            await fhir.read("Patient", patient["id"])
    assert {r["id"] for r in reads} == {patient["id"]}
    assert source.tokens_fetched == 1


async def test_token_refreshed_before_it_expires(ehr: RunningFhirServer) -> None:
    clock = Clock()
    source = _source(ehr, clock=clock)
    async with FhirClient(ehr.base_url, SmartBackendAuth(source), 5.0) as fhir:
        patient = await fhir.create(PATIENT)
        first = await source.token()
        clock.now += 3600 - 61  # still more than the refresh margin (60 s) left
        await fhir.read("Patient", patient["id"])
        assert source.tokens_fetched == 1
        clock.now += 2  # inside the margin: refreshed before the EHR would refuse it
        await fhir.read("Patient", patient["id"])
        second = await source.token()
    assert source.tokens_fetched == 2
    assert second.value != first.value


async def test_token_refreshed_once_after_a_401(short_lived_ehr: RunningFhirServer) -> None:
    clock = Clock()  # never moves: the cache believes the token is fresh, only the 401 says otherwise
    source = _source(short_lived_ehr, clock=clock)
    async with FhirClient(short_lived_ehr.base_url, SmartBackendAuth(source), 5.0) as fhir:
        patient = await fhir.create(PATIENT)
        assert source.tokens_fetched == 1
        await asyncio.sleep(2.2)  # the EHR's token (exp = iat + 1 s) has expired
        assert (await fhir.read("Patient", patient["id"]))["id"] == patient["id"]
        assert source.tokens_fetched == 2
        await asyncio.sleep(2.2)  # expired again: ten requests meet the 401 together, one new token
        reads = await asyncio.gather(*(fhir.read("Patient", patient["id"]) for _ in range(10)))
    assert len(reads) == 10
    assert source.tokens_fetched == 3


async def test_wrong_key_is_a_clear_smart_auth_error(ehr: RunningFhirServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source = _source(ehr, "bridge-rs", generate_signing_key("RS384"))
    async with FhirClient(ehr.base_url, SmartBackendAuth(source), 5.0) as fhir:
        with pytest.raises(SmartAuthError) as caught:
            await fhir.read("Patient", "example-1")
    assert caught.value.error == "invalid_client"
    assert caught.value.status_code == 401
    assert isinstance(caught.value, FhirAuthError)  # the pipeline's auth-failure handling applies
    assert "eyJ" not in str(caught.value)  # neither the assertion nor any token
    assert source.tokens_fetched == 0


async def test_unknown_client_and_unallowed_scope(ehr: RunningFhirServer) -> None:
    with pytest.raises(SmartAuthError) as unknown:
        await _source(ehr, "nobody").token()
    assert unknown.value.error == "invalid_client"
    narrow = SmartTokenSource(ehr.base_url, "bridge-es", ES_KEY, "system/Appointment.rs", clock=Clock())
    with pytest.raises(SmartAuthError) as scope:
        await narrow.token()
    assert scope.value.error == "invalid_scope"


async def test_nothing_secret_in_logs(ehr: RunningFhirServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source = _source(ehr)
    async with FhirClient(ehr.base_url, SmartBackendAuth(source), 5.0) as fhir:
        await fhir.create(PATIENT)
    token = await source.token()
    assert "SMART token obtained" in caplog.text  # the log line exists ...
    assert token.value not in caplog.text and "eyJ" not in caplog.text  # ... without the token or assertion
    assert token.value not in repr(token) and "eyJ" not in repr(SmartBackendAuth(source))
    assert "PRIVATE" not in repr(RS_KEY)


async def test_discovery_falls_back_to_the_configured_token_url(ehr: RunningFhirServer) -> None:
    without_config = ehr.root_url + "/no-such-base"
    fallback = SmartTokenSource(without_config, "bridge-rs", RS_KEY, SCOPE, token_url=f"{ehr.root_url}/auth/token")
    assert (await fallback.token()).expires_in == 3600
    with pytest.raises(SmartAuthError) as caught:
        await SmartTokenSource(without_config, "bridge-rs", RS_KEY, SCOPE).token()
    assert caught.value.error == "discovery_failed"
    assert "fhir_smart_token_url" in str(caught.value)


async def test_unreachable_token_server_is_retryable(ehr: RunningFhirServer) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SmartTokenUnavailableError) as discovery:
        await SmartTokenSource(closed + "/fhir", "bridge-rs", RS_KEY, SCOPE, timeout_seconds=2).token()
    with pytest.raises(SmartTokenUnavailableError) as token:
        await SmartTokenSource(ehr.root_url + "/no-such-base", "bridge-rs", RS_KEY, SCOPE,
                               token_url=closed + "/auth/token", timeout_seconds=2).token()
    for caught in (discovery, token):
        assert isinstance(caught.value, FhirUnavailableError) and caught.value.operation == "token"


async def test_built_from_settings(ehr: RunningFhirServer, tmp_path: Path) -> None:
    key_file = tmp_path / "smart.pem"
    key_file.write_bytes(ES_KEY.private_pem())
    settings = load_settings(mode="demo", fhir_base_url=ehr.base_url, fhir_auth="smart",
                             fhir_smart_client_id="bridge-es", fhir_smart_private_key_file=key_file,
                             fhir_smart_scope="system/Patient.rs  system/Patient.c")
    auth = auth_from_settings(settings)
    assert isinstance(auth, SmartBackendAuth) and auth.scheme == "smart"
    assert auth.source.key.kid == ES_KEY.kid and auth.source.key.alg == "ES384"
    async with FhirClient(ehr.base_url, auth, 5.0) as fhir:
        assert (await fhir.create(PATIENT))["resourceType"] == "Patient"


def test_settings_refuse_incomplete_or_wrong_values(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BRIDGE_FHIR_SMART_CLIENT_ID"):
        load_settings(mode="demo", fhir_auth="smart")
    with pytest.raises(SettingsError, match="is not a file"):
        load_settings(mode="demo", fhir_auth="smart", fhir_smart_client_id="c",
                      fhir_smart_private_key_file=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a key", encoding="ascii")
    with pytest.raises(SettingsError, match=r"junk\.pem is not an unencrypted PEM private key"):
        load_settings(mode="demo", fhir_auth="smart", fhir_smart_client_id="c",
                      fhir_smart_private_key_file=tmp_path / "junk.pem")
    with pytest.raises(SettingsError, match="not a SMART system scope"):
        load_settings(mode="demo", fhir_smart_scope="patient/Patient.read")
    with pytest.raises(SettingsError, match="http"):
        load_settings(mode="demo", fhir_smart_token_url="ftp://ehr.example/token")


def test_key_files_are_checked(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    wrong_curve = SigningKey(ec.generate_private_key(ec.SECP256R1()), "ES384", "k")
    (tmp_path / "p256.pem").write_bytes(wrong_curve.private_pem())
    with pytest.raises(SmartKeyError, match="P-384"):
        load_signing_key(tmp_path / "p256.pem")
    (tmp_path / "junk.pem").write_text("not a key", encoding="ascii")
    with pytest.raises(SmartKeyError, match="not an unencrypted PEM"):
        load_signing_key(tmp_path / "junk.pem")
    with pytest.raises(SmartKeyError, match="cannot read"):
        load_signing_key(tmp_path / "absent.pem")


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_cli_keygen_prints_the_jwks_to_register(tmp_path: Path, alg: str) -> None:
    out = tmp_path / "keys" / "smart.pem"
    result = CliRunner().invoke(smart_app, ["keygen", "--alg", alg, "--out", str(out)])
    assert result.exit_code == 0, result.output
    jwks = json.loads(result.stdout)
    loaded = load_signing_key(out)
    assert jwks == loaded.jwks() and loaded.alg == alg
    assert "PRIVATE" not in result.stdout and "d" not in jwks["keys"][0]  # public half only
    assert out.stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(smart_app, ["keygen", "--alg", alg, "--out", str(out)])
    assert again.exit_code == 2 and load_signing_key(out).kid == loaded.kid  # not overwritten


def test_cli_token_prints_expiry_and_scopes_only(ehr: RunningFhirServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "smart.pem"
    key_file.write_bytes(RS_KEY.private_pem())
    for name, value in {"MODE": "demo", "FHIR_BASE_URL": ehr.base_url, "FHIR_AUTH": "smart",
                        "FHIR_SMART_CLIENT_ID": "bridge-rs", "FHIR_SMART_PRIVATE_KEY_FILE": str(key_file),
                        "FHIR_SMART_SCOPE": "system/Appointment.rs"}.items():
        monkeypatch.setenv(f"BRIDGE_{name}", value)
    started = time.time()
    result = CliRunner().invoke(smart_app, ["token"])
    assert result.exit_code == 0, result.output
    assert "expires in 3600 s" in result.stdout and "scopes granted: system/Appointment.rs" in result.stdout
    assert "eyJ" not in result.stdout
    assert time.time() - started < 10
    monkeypatch.setenv("BRIDGE_FHIR_SMART_CLIENT_ID", "nobody")
    refused = CliRunner().invoke(smart_app, ["token"])
    assert refused.exit_code == 1 and "invalid_client" in refused.output
