"""The optional hand-off to the portal, wired in the service: a redeemed link redirects with a
signed assertion in the fragment, verifiable from the published JWKS; rotation by the CLI takes
effect without a restart, and older assertions keep verifying until their key is retired."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from adapter.app import create_app
from adapter.cli.main import app as cli
from adapter.settings import SettingsError, load_settings
from adapter.storage.db import transaction, upgrade, utcnow
from portal_links.assertions.keyring import AssertionKeyRing
from portal_links.assertions.verifier import AssertionRefused, AssertionVerifier
from tests.support.asgi_server import serve_in_thread

PSEUDONYM_KEY = base64.urlsafe_b64encode(b"p" * 32).decode()


def test_a_redeemed_link_hands_off_a_verifiable_assertion_and_rotation_needs_no_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "assertion-keys.json"
    AssertionKeyRing.generate(now=utcnow() - timedelta(hours=1)).save(keys)  # its next key is long published
    settings = load_settings(mode="demo", database_url=f"sqlite:///{tmp_path / 'b.db'}",
                             portal_assertion_keys_file=keys, portal_pseudonym_key=PSEUDONYM_KEY,
                             portal_base_url="https://portal.example")
    application = create_app(settings)
    service = application.state.service
    upgrade(service.engine)

    def open_link() -> str:
        with transaction(service.engine) as session:
            token = service.links.mint(session, purpose="results", target="report", patient_ref="Patient/77",
                                       resource_ref="DiagnosticReport/5")
        answer = httpx.post(f"{url}/l/{token}", follow_redirects=False, timeout=5)
        assert answer.status_code == 303
        location, _, fragment = answer.headers["location"].partition("#assertion=")
        assert location == "https://portal.example/results" and fragment
        return fragment

    with serve_in_thread(application) as url:
        first = open_link()
        jwks = httpx.get(f"{url}/.well-known/jwks.json", timeout=5).json()
        verifier = AssertionVerifier(jwks, settings.public_base_url, "patient-portal")
        claims = verifier.verify(first)
        assert claims["sub"] and "77" not in claims["sub"] and "Patient" not in claims["sub"]
        monkeypatch.setenv("BRIDGE_MODE", "demo")
        monkeypatch.setenv("BRIDGE_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("BRIDGE_PORTAL_ASSERTION_KEYS_FILE", str(keys))
        rotated = CliRunner().invoke(cli, ["assertion-keys", "rotate"])
        assert rotated.exit_code == 0, rotated.output
        second = open_link()  # signed with the new key, without a restart
        jwks_after = httpx.get(f"{url}/.well-known/jwks.json", timeout=5).json()
    assert {k["kid"] for k in jwks["keys"]} & {k["kid"] for k in jwks_after["keys"]}
    after = AssertionVerifier(jwks_after, settings.public_base_url, "patient-portal")
    assert after.verify(second)["sub"] == claims["sub"]
    assert after.verify(first)["jti"] == claims["jti"]  # the retired key is still published: still valid
    with pytest.raises(AssertionRefused, match="replayed"):
        verifier.verify(first)


def test_assertions_need_the_pseudonym_key(tmp_path: Path) -> None:
    keys = tmp_path / "k.json"
    AssertionKeyRing.generate().save(keys)
    settings = load_settings(mode="demo", database_url=f"sqlite:///{tmp_path / 'b.db'}",
                             portal_assertion_keys_file=keys)
    with pytest.raises(SettingsError, match="BRIDGE_PORTAL_PSEUDONYM_KEY"):
        create_app(settings)
