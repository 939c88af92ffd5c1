"""Settings are validated at start-up with messages an administrator can act on."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from adapter.audit.signing import AuditSigner
from adapter.settings import Settings, SettingsError, load_settings

# Production requires the audit signing key as a file outside the database: one for this module.
AUDIT_KEY_FILE = Path(tempfile.mkdtemp(prefix="bridge-test-audit-key-")) / "audit-signing.pem"
AuditSigner.generate_file(AUDIT_KEY_FILE)

REAL = {
    "audit_signing_key_file": str(AUDIT_KEY_FILE),
    "whatsapp_access_token": "EAAG-synthetic-test-token-0000", "whatsapp_app_secret": "a" * 32,
    "whatsapp_verify_token": "v" * 24, "ehr_hook_secret": "h" * 32,
    "data_encryption_key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "blind_index_key": "aW5kZXgtMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODk=",
    "link_signing_key": "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
}


def problems(**overrides: object) -> list[str]:
    with pytest.raises(SettingsError) as error:
        load_settings(**overrides)
    return error.value.problems


def test_demo_mode_runs_on_the_embedded_defaults() -> None:
    settings = load_settings(mode="demo")
    assert settings.is_sqlite and settings.zone.key == "America/New_York"


def test_production_refuses_every_placeholder_secret_by_name() -> None:
    found = problems()
    for name in ("whatsapp_access_token", "whatsapp_app_secret", "whatsapp_verify_token", "ehr_hook_secret",
                 "data_encryption_key", "link_signing_key"):
        assert any(line.startswith(name) and f"BRIDGE_{name.upper()}" in line for line in found), name
    assert load_settings(**REAL).mode == "production"


def test_production_requires_an_audit_signing_key_file(tmp_path: Path) -> None:
    without = {name: value for name, value in REAL.items() if name != "audit_signing_key_file"}
    assert any(line.startswith("audit_signing_key_file is not set") and "bridge audit keygen" in line
               for line in problems(**without))
    assert any("is not a file" in line for line in problems(**without, audit_signing_key_file=tmp_path / "none.pem"))


def test_messages_name_the_variable_and_the_fix() -> None:
    found = problems(mode="demo", site_timezone="Mars/Olympus", default_phone_region="XX", bogus=1,
                     fhir_base_url="ftp://ehr", link_signing_key="short")
    text = "\n".join(found)
    assert "BRIDGE_SITE_TIMEZONE" in text and "IANA time zone" in text
    assert "BRIDGE_DEFAULT_PHONE_REGION" in text and "two-letter region" in text
    assert "bogus: unknown setting" in text
    assert "BRIDGE_FHIR_BASE_URL" in text and "http://" in text
    assert "BRIDGE_LINK_SIGNING_KEY" in text and "32 random bytes" in text and "bridge keys-new" in text
    assert "Traceback" not in text and "pydantic" not in text.lower()


def test_auth_settings_must_be_complete() -> None:
    assert any("BRIDGE_FHIR_USERNAME" in p for p in problems(mode="demo", fhir_auth="basic"))
    assert any("BRIDGE_FHIR_BEARER_TOKEN" in p for p in problems(mode="demo", fhir_auth="bearer"))
    assert any("consent_source=assume" in p for p in problems(**REAL, consent_source="assume"))


def test_secrets_never_appear_in_messages() -> None:
    text = "\n".join(problems(**{**REAL, "link_signing_key": "a-secret-but-too-short", "site_timezone": "nope"}))
    assert "a-secret-but-too-short" not in text


def test_environment_and_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "bridge.yaml"
    file.write_text("mode: demo\nsite_timezone: Europe/Madrid\nsite_labels:\n  Location/7: Norte\n")
    monkeypatch.setenv("BRIDGE_SETTINGS_FILE", str(file))
    monkeypatch.setenv("BRIDGE_SITE_TIMEZONE", "Europe/Lisbon")  # the environment wins over the file
    settings = load_settings()
    assert settings.site_timezone == "Europe/Lisbon" and settings.site_labels == {"Location/7": "Norte"}
    monkeypatch.setenv("BRIDGE_SETTINGS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match="not a file"):
        load_settings()


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`BRIDGE_([A-Z0-9_]+)`", readme))
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"settings missing from the README: {sorted(missing)}"


def test_webhook_secret_rotation_and_whatsapp_limits() -> None:
    rotating = load_settings(**REAL, whatsapp_app_secret_previous="b" * 32)
    assert rotating.app_secrets() == [b"a" * 32, b"b" * 32]
    assert load_settings(**REAL).app_secrets() == [b"a" * 32]
    assert any("whatsapp_app_secret_previous has a placeholder value" in line
               for line in problems(**REAL, whatsapp_app_secret_previous="changeme"))
    found = "\n".join(problems(**REAL, whatsapp_messages_per_second=5000, whatsapp_pair_interval_seconds=0.1,
                               undeliverable_hook_url="ftp://x"))
    assert "BRIDGE_WHATSAPP_MESSAGES_PER_SECOND" in found and "1000" in found
    assert "BRIDGE_WHATSAPP_PAIR_INTERVAL_SECONDS" in found
    assert "BRIDGE_UNDELIVERABLE_HOOK_URL" in found


def test_an_unknown_fallback_template_stops_the_service_at_start(tmp_path: Path) -> None:
    from adapter.service import build_service

    settings = load_settings(mode="demo", database_url=f"sqlite:///{tmp_path / 'b.db'}",
                             whatsapp_fallback_template="no_such_template")
    with pytest.raises(SettingsError, match="whatsapp_fallback_template: no template named 'no_such_template'"):
        build_service(settings)


def test_a_broken_conversation_file_stops_the_service_with_its_name(tmp_path: Path) -> None:
    from adapter.service import build_service
    from mappings.conversation import ConversationError

    broken = tmp_path / "conversation.yaml"
    broken.write_text("languages:\n  en_US:\n    stop_words: [stop]\n", encoding="utf-8")
    settings = load_settings(mode="demo", database_url=f"sqlite:///{tmp_path / 'b.db'}", conversation_file=broken)
    with pytest.raises(ConversationError, match="en_US"):
        build_service(settings)
