"""Operator commands against a real SQLite database: opt-in registry, skips, dead letters,
settings check — clear messages and exit codes, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli.main import app
from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.storage.db import make_engine, transaction, upgrade, utcnow

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    return url


def test_consent_grant_revoke_and_list(env: str) -> None:
    assert runner.invoke(app, ["consent", "grant", "Patient/123"]).exit_code == 0
    assert runner.invoke(app, ["consent", "grant", "Patient/456"]).exit_code == 0
    assert runner.invoke(app, ["consent", "revoke", "Patient/456"]).exit_code == 0
    listed = runner.invoke(app, ["consent", "list"]).output
    assert "Patient/123\topted_in\tadmin" in listed and "Patient/456\topted_out\tadmin" in listed
    bad = runner.invoke(app, ["consent", "grant", "123"])
    assert bad.exit_code == 2 and "Patient/123" in bad.output


def test_consent_revoke_also_stops_every_health_tips_topic(env: str) -> None:
    from sqlmodel import Session

    from adapter.education.consent import set_topic_consent, subscribed

    engine = make_engine(env)
    upgrade(engine)
    with transaction(engine) as session:
        set_topic_consent(session, "Patient/789", "diabetes", "opted_in", "chat")
        set_topic_consent(session, "Patient/789", "pregnancy", "opted_in", "chat")
        set_topic_consent(session, "Patient/790", "diabetes", "opted_in", "chat")
    assert runner.invoke(app, ["consent", "grant", "Patient/789"]).exit_code == 0
    assert runner.invoke(app, ["consent", "revoke", "Patient/789"]).exit_code == 0
    assert runner.invoke(app, ["consent", "grant", "Patient/789"]).exit_code == 0  # does not resubscribe
    with Session(engine) as session:
        assert subscribed(session, "Patient/789") == set()
        assert subscribed(session, "Patient/790") == {"diabetes"}  # another patient's topics stay


def test_skips_and_dead_letters(env: str) -> None:
    engine = make_engine(env)
    upgrade(engine)
    now = utcnow()
    with transaction(engine) as session:
        session.add(NotificationSkip(rule_id="appointment-booked-confirmation", resource_ref="Appointment/9",
                                     version_id="2", patient_ref="Patient/9", reason="no_opt_in", created_at=now))
        session.add(OutboxMessage(natural_key="k", rule_id="r", resource_ref="Appointment/9", patient_ref="Patient/9",
                                  payload="{}", recipient_enc="v1.x.y.z", state="dead", due_at=now, attempts=8,
                                  dead_reason="UndeliverableError code=131026", created_at=now, updated_at=now))
    assert "Appointment/9/_history/2\tPatient/9\tno_opt_in" in runner.invoke(app, ["skips"]).output
    listed = runner.invoke(app, ["dead-letters", "list"]).output
    assert "UndeliverableError code=131026" in listed
    assert "queued again" in runner.invoke(app, ["dead-letters", "retry", "1"]).output
    assert "not a dead letter" in runner.invoke(app, ["dead-letters", "retry", "1"]).output
    assert "no outbox message 99" in runner.invoke(app, ["dead-letters", "retry", "99"]).output


def test_check_settings_masks_secrets_and_reports_problems(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = runner.invoke(app, ["check-settings"])
    assert shown.exit_code == 0 and "whatsapp_app_secret = ********" in shown.output
    assert "demo-only" not in shown.output
    monkeypatch.setenv("BRIDGE_DATABASE_URL", "postgresql+psycopg://bridge:synthetic-pw-7@db:5432/bridge")
    with_url = runner.invoke(app, ["check-settings"]).output
    assert "database_url = postgresql+psycopg://bridge:***@db:5432/bridge" in with_url
    assert "synthetic-pw-7" not in with_url
    monkeypatch.setenv("BRIDGE_MODE", "production")
    refused = runner.invoke(app, ["check-settings"])
    assert refused.exit_code == 2 and "BRIDGE_WHATSAPP_ACCESS_TOKEN" in refused.output


def test_keys_new_makes_a_valid_key(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = runner.invoke(app, ["keys-new"]).output.strip()
    monkeypatch.setenv("BRIDGE_LINK_SIGNING_KEY", key)
    assert runner.invoke(app, ["check-settings"]).exit_code == 0


def test_bad_mapping_rules_refuse_to_start_with_the_file_and_field(env: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "clinic.yaml").write_text(
        "rules:\n  - id: appt\n    resource: Appointment\n    when: {status_enters: [booked]}\n"
        "    template: {default: appointment_confirmation}\n"
        "    body: [{kind: patient_name}, {kind: local_time, source: 'Appointment..start'}, {kind: site_label}]\n"
        "    buttons: []\n")
    monkeypatch.setenv("BRIDGE_MAPPINGS_DIR", str(rules))
    refused = runner.invoke(app, ["dead-letters", "list"])
    assert refused.exit_code == 2
    assert "clinic.yaml" in refused.output and "patient_name" in refused.output
    assert "Traceback" not in refused.output


def test_inbox_dead_and_retry(env: str) -> None:
    from datetime import timedelta

    from adapter.feeds.inbox import InboxStore
    from ehr.notifications import IncomingNotification

    engine = make_engine(env)
    upgrade(engine)
    inbox = InboxStore(engine)
    inbox.accept([IncomingNotification("appointment", "resource", "Appointment", "a1", "3")])
    [event] = inbox.claim(1)
    inbox.retry_later(event.id or 0, "FhirUnavailableError", timedelta(0), max_attempts=1)
    assert "Appointment/a1\t1 attempts\tFhirUnavailableError" in runner.invoke(app, ["inbox", "dead"]).output
    assert "queued again" in runner.invoke(app, ["inbox", "retry", str(event.id)]).output


def test_sending_pause_and_alerts_commands(env: str) -> None:
    from adapter.outbox.circuit_breaker import pause_sending

    engine = make_engine(env)
    upgrade(engine)
    assert runner.invoke(app, ["sending", "status"]).output.strip() == "sending: running"
    with transaction(engine) as session:
        pause_sending(session, "AccountBlockedError code=190: Access token invalid or expired")
    status = runner.invoke(app, ["sending", "status"]).output
    assert "PAUSED" in status and "code=190" in status
    alerts = runner.invoke(app, ["alerts", "list"]).output
    assert "sending_paused" in alerts and "code=190" in alerts
    assert runner.invoke(app, ["sending", "resume"]).output.strip() == "sending resumed"
    assert runner.invoke(app, ["sending", "resume"]).output.strip() == "sending was not paused"
    assert runner.invoke(app, ["alerts", "ack"]).output.strip() == "acknowledged 1"
    assert runner.invoke(app, ["alerts", "list"]).output == ""


def test_templates_sync_creates_what_the_waba_lacks_and_records_states(env: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from adapter.settings import DEMO_SECRET
    from whatsapp.catalogue import TemplateCatalogue
    from whatsapp.emulator import EmulatorConfig, EmulatorServer

    # A WABA that holds only one of the project's templates: sync must create the others.
    only_one = TemplateCatalogue([t for t in TemplateCatalogue.load(public_base_url="https://bridge.example")
                                  if t.name == "results_ready"])
    with EmulatorServer(EmulatorConfig(access_token=DEMO_SECRET, app_secret=DEMO_SECRET,
                                       catalogue=only_one)) as emulator:
        monkeypatch.setenv("BRIDGE_WHATSAPP_API_BASE_URL", emulator.base_url)
        monkeypatch.setenv("BRIDGE_PUBLIC_BASE_URL", "https://bridge.example")
        first = runner.invoke(app, ["templates", "sync"])
        assert first.exit_code == 0, first.output
        lines = [line.split("\t") for line in first.output.strip().splitlines()]
        assert {(name, lang, action) for name, lang, action, *_ in lines} >= {
            ("results_ready", "en_US", "exists"), ("service_update", "es", "created")}
        again = runner.invoke(app, ["templates", "sync"]).output
        assert "\tcreated\t" not in again  # idempotent
        states = runner.invoke(app, ["templates", "status"]).output
        assert "appointment_confirmation\tes\tAPPROVED" in states


def test_templates_sync_explains_an_unreachable_waba(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_WHATSAPP_API_BASE_URL", "http://127.0.0.1:9")
    result = runner.invoke(app, ["templates", "sync"])
    assert result.exit_code == 1 and "could not reach the WhatsApp Business Account" in result.output


def test_links_revoke_at_each_level_and_explains_bad_input(env: str) -> None:
    from datetime import timedelta

    from adapter.audit.link_access import LINK_PORTS
    from portal_links.store import LinkStore
    from portal_links.tokens import LinkSigner

    engine = make_engine(env)
    upgrade(engine)
    store = LinkStore(LinkSigner(b"s" * 32), timedelta(hours=1), LINK_PORTS)
    with transaction(engine) as session:
        for n in range(4):
            store.mint(session, purpose="results", target="report", patient_ref=f"Patient/{n % 2}",
                       resource_ref="DiagnosticReport/1", message_key=f"m{n}")
    assert runner.invoke(app, ["links", "revoke", "--link", "1"]).output.strip() == "revoked 1 link(s)"
    assert runner.invoke(app, ["links", "revoke", "--message", "m2"]).output.strip() == "revoked 1 link(s)"
    assert runner.invoke(app, ["links", "revoke", "--patient", "Patient/1"]).output.strip() == "revoked 2 link(s)"
    window = runner.invoke(app, ["links", "revoke", "--created-from", "2000-01-01T00:00:00+00:00",
                                 "--created-to", "2999-01-01T00:00:00+00:00"])
    assert window.output.strip() == "revoked 0 link(s)"  # all four were already revoked
    assert runner.invoke(app, ["links", "revoke"]).exit_code == 2
    naive = runner.invoke(app, ["links", "revoke", "--created-from", "2026-01-01", "--created-to", "2026-02-01"])
    assert naive.exit_code == 2 and "time zone" in naive.output
