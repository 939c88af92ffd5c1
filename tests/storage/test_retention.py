"""Retention purges on SQLite and PostgreSQL: rows just inside each period
stay, rows just outside go, rows in flight stay whatever their age, a second run removes nothing,
every purge is audited with its row count, and an opted-out patient's contact data goes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.link_access import LINK_PORTS
from adapter.audit.tables import AuditEvent, LegalHold
from adapter.conversation.tables import ActionRequest, InboundMessage
from adapter.maintenance.retention import CATEGORY_NAMES, OPT_OUT_GRACE, RetentionPolicy, run_retention
from adapter.outbox.action_tokens import mint_action_token
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import ActionToken, NotificationSkip, OutboxMessage, SendAttempt, WhatsAppStatus
from adapter.recipients.consent import OPTED_IN, OPTED_OUT, set_consent
from adapter.recipients.tables import ConsentRecord, WhatsAppContact
from adapter.storage.db import table_of, transaction, utcnow
from portal_links.requests import insert_request
from portal_links.store import LinkStore
from portal_links.tables import LinkRequest, LinkToken
from portal_links.tokens import LinkSigner
from tests.support.stores import outbox_store

NOW = utcnow()
POLICY = RetentionPolicy(link_days=30, message_days=90, batch_size=500)
LINK_EDGE = NOW - timedelta(days=POLICY.link_days)
MESSAGE_EDGE = NOW - timedelta(days=POLICY.message_days)
HOUR = timedelta(hours=1)
TEMPLATE = {"name": "appointment_reminder", "language": {"code": "en_US"}, "components": []}


def number(n: int) -> str:
    return f"+1555010{n:04d}"


def ids(engine: Engine, model: Any, *where: Any) -> set[int]:
    with Session(engine) as session:
        return set(session.exec(select(model.id).where(*where)).all())


def retention_events(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "retention")
                            .order_by(col(AuditEvent.id))).all()
    for row in rows:
        assert row.action == "D" and row.agent == "cli:tester"
    return [json.loads(row.detail or "{}") for row in rows]


def rows_by_category(events: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for detail in events:
        totals[detail["category"]] = totals.get(detail["category"], 0) + detail["rows"]
    return totals


# --- building rows through the real stores


def mint_link(engine: Engine, *, expires_at: datetime, patient: str = "Patient/example-1") -> int:
    store = LinkStore(LinkSigner(b"L" * 32), timedelta(hours=72), LINK_PORTS)
    with transaction(engine) as session:
        store.mint(session, purpose="diagnostic-report-ready", target="report", patient_ref=patient,
                   resource_ref="DiagnosticReport/example-1", now=expires_at - timedelta(hours=72))
    with Session(engine) as session:
        return int(session.exec(select(LinkToken.id).order_by(col(LinkToken.id).desc())).first() or 0)


def log_request(engine: Engine, link_id: int | None, at: datetime) -> None:
    with transaction(engine) as session:
        insert_request(session, LINK_PORTS.audit, link_id=link_id, outcome="preview" if link_id else "malformed",
                       client="192.0.2.1", user_agent="WhatsApp/2.23", method="GET", at=at)


def message(engine: Engine, outbox: OutboxStore, key: str, *, state: str, changed_at: datetime,
            patient: str = "Patient/example-1", n: int = 1, purpose: str = "notify", hook_state: str | None = None,
            wamid: str | None = None) -> int:
    with transaction(engine) as session:
        if purpose == "consent":
            outbox.enqueue_message(session, natural_key=key, rule_id="consent", resource_ref=patient,
                                   patient_ref=patient, recipient=number(n), due_at=changed_at, purpose=purpose,
                                   message={"type": "text", "text": {"body": "You will get no more messages."}},
                                   fallback=TEMPLATE)
        else:
            outbox.enqueue(session, natural_key=key, rule_id="reminder", resource_ref="Appointment/example-1",
                           patient_ref=patient, recipient=number(n), template=TEMPLATE, due_at=changed_at)
        outbox_id = session.exec(select(OutboxMessage.id).where(col(OutboxMessage.natural_key) == key)).one()
        assert outbox_id is not None
        session.execute(update(table_of(OutboxMessage)).where(table_of(OutboxMessage).c.id == outbox_id).values(
            state=state, updated_at=changed_at, created_at=changed_at, hook_state=hook_state, wamid=wamid,
            delivery_status="delivered" if state == "sent" else None))
        session.add(SendAttempt(outbox_id=outbox_id, attempt_no=1, started_at=changed_at, outcome="sent"))
        return outbox_id


def status(engine: Engine, wamid: str, received_at: datetime, *, applied: bool = True) -> None:
    with transaction(engine) as session:
        session.add(WhatsAppStatus(dedupe_key=f"{wamid}:delivered", wamid=wamid, status="delivered",
                                   meta_timestamp=int(received_at.timestamp()), received_at=received_at,
                                   applied_at=received_at if applied else None))


def inbound_row(engine: Engine, wamid: str, received_at: datetime, state: str) -> None:
    with transaction(engine) as session:
        session.add(InboundMessage(wamid=wamid, message_type="text", meta_timestamp=int(received_at.timestamp()),
                                   received_at=received_at, state=state,
                                   content_enc=None if state != "pending" else "v1.x.y.z"))


def action_request(engine: Engine, key: str, created_at: datetime, state: str) -> None:
    with transaction(engine) as session:
        session.add(ActionRequest(dedupe_key=key, kind="confirm", patient_ref="Patient/example-1",
                                  phone_index=b"i" * 32, language="en_US", state=state, next_attempt_at=created_at,
                                  created_at=created_at))


def skip(engine: Engine, rule: str, created_at: datetime) -> None:
    with transaction(engine) as session:
        session.add(NotificationSkip(rule_id=rule, resource_ref="Appointment/example-1", reason="no_consent",
                                     patient_ref="Patient/example-1", created_at=created_at))


def action_token(engine: Engine, expires_at: datetime) -> None:
    with transaction(engine) as session:
        mint_action_token(session, action="confirm", patient_ref="Patient/example-1",
                          resource_ref="Appointment/example-1", version_id="1", ttl=timedelta(days=60),
                          now=expires_at - timedelta(days=60))


# --- tests


def test_links_go_some_days_after_expiry_or_revocation_with_their_access_log(engine: Engine) -> None:
    expired = mint_link(engine, expires_at=LINK_EDGE - HOUR)
    recently_expired = mint_link(engine, expires_at=LINK_EDGE + HOUR)
    live = mint_link(engine, expires_at=NOW + timedelta(days=2))
    revoked_long_ago = mint_link(engine, expires_at=NOW + timedelta(days=40))
    with transaction(engine) as session:
        session.execute(update(table_of(LinkToken)).where(table_of(LinkToken).c.id == revoked_long_ago)
                        .values(revoked_at=LINK_EDGE - HOUR))
    for link_id in (expired, recently_expired, live, revoked_long_ago):
        log_request(engine, link_id, LINK_EDGE - timedelta(days=5))
    log_request(engine, None, LINK_EDGE - HOUR)  # a forged token, long ago: goes
    log_request(engine, None, LINK_EDGE + HOUR)  # a forged token, recently: stays

    report = run_retention(engine, POLICY, now=NOW, actor="cli:tester")

    assert ids(engine, LinkToken) == {recently_expired, live}
    with Session(engine) as session:
        left = session.exec(select(LinkRequest.link_id, LinkRequest.at)).all()
    assert sorted((link_id or 0) for link_id, _ in left) == sorted([0, recently_expired, live])
    assert report.counts["link_token"] == 2 and report.counts["link_request"] == 3
    assert rows_by_category(retention_events(engine)) == {"link_token": 2, "link_request": 3}
    assert retention_events(engine)[0]["older_than"] == LINK_EDGE.strftime("%Y%m%dT%H%M%SZ")

    again = run_retention(engine, POLICY, now=NOW, actor="cli:tester")
    assert again.total == 0
    assert len(retention_events(engine)) == 2  # nothing removed, nothing audited


def test_message_details_go_after_the_period_and_rows_in_flight_stay(engine: Engine) -> None:
    outbox = outbox_store(engine)
    old, recent = MESSAGE_EDGE - HOUR, MESSAGE_EDGE + HOUR
    sent_old = message(engine, outbox, "sent-old", state="sent", changed_at=old, wamid="wamid.sent-old")
    dead_old = message(engine, outbox, "dead-old", state="dead", changed_at=old)
    suppressed_old = message(engine, outbox, "suppressed-old", state="suppressed", changed_at=old)
    sent_recent = message(engine, outbox, "sent-recent", state="sent", changed_at=recent, wamid="wamid.sent-recent")
    queued_old = message(engine, outbox, "queued-old", state="queued", changed_at=old)
    sending_old = message(engine, outbox, "sending-old", state="sending", changed_at=old, wamid="wamid.sending-old")
    hook_old = message(engine, outbox, "hook-old", state="dead", changed_at=old, hook_state="pending")
    status(engine, "wamid.sent-old", old)
    status(engine, "wamid.sent-recent", recent)
    status(engine, "wamid.unapplied", old, applied=False)
    status(engine, "wamid.sending-old", old)
    action_token(engine, expires_at=old)
    action_token(engine, expires_at=recent)
    inbound_row(engine, "wamid.in-done-old", old, "done")
    inbound_row(engine, "wamid.in-failed-old", old, "failed")
    inbound_row(engine, "wamid.in-pending-old", old, "pending")
    inbound_row(engine, "wamid.in-done-recent", recent, "done")
    skip(engine, "old", old)
    skip(engine, "recent", recent)
    for key, at, state in (("done-old", old, "done"), ("failed-old", old, "failed"), ("pending-old", old, "pending"),
                           ("done-recent", recent, "done")):
        action_request(engine, key, at, state)

    report = run_retention(engine, POLICY, now=NOW, actor="cli:tester")

    with Session(engine) as session:
        rows = {row.id: row for row in session.exec(select(OutboxMessage)).all()}
    assert set(rows) == {sent_old, dead_old, suppressed_old, sent_recent, queued_old, sending_old, hook_old}
    for cleared in (sent_old, dead_old, suppressed_old):
        row = rows[cleared]
        assert (row.payload, row.fallback, row.recipient_enc) == (None, None, None)
        assert row.natural_key and row.state in ("sent", "dead", "suppressed")  # kept for reports
    assert rows[sent_old].delivery_status == "delivered" and rows[sent_old].wamid == "wamid.sent-old"
    for kept in (sent_recent, queued_old, sending_old, hook_old):
        assert rows[kept].payload is not None and rows[kept].recipient_enc is not None
    with Session(engine) as session:
        attempts = set(session.exec(select(SendAttempt.outbox_id)).all())
        statuses = set(session.exec(select(WhatsAppStatus.wamid)).all())
        inbound = set(session.exec(select(InboundMessage.wamid)).all())
        skips = set(session.exec(select(NotificationSkip.rule_id)).all())
        requests = set(session.exec(select(ActionRequest.dedupe_key)).all())
        tokens = list(session.exec(select(ActionToken.expires_at)).all())
    assert attempts == {sent_recent, queued_old, sending_old, hook_old}
    assert statuses == {"wamid.sent-recent", "wamid.unapplied", "wamid.sending-old"}
    assert inbound == {"wamid.in-pending-old", "wamid.in-done-recent"}
    assert skips == {"recent"}
    assert requests == {"pending-old", "done-recent"}
    assert len(tokens) == 1
    expected = {"outbox_payload": 3, "send_attempt": 3, "wa_status": 1, "action_token": 1, "wa_inbound": 2,
                "notification_skip": 1, "action_request": 2}
    assert {name: rows for name, rows in report.counts.items() if rows} == expected
    assert rows_by_category(retention_events(engine)) == expected
    assert len(retention_events(engine)) == len(expected)  # one entry per category at this batch size

    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester").total == 0
    assert len(retention_events(engine)) == len(expected)


def test_opted_out_patients_lose_their_contact_data_and_opted_in_ones_keep_it(engine: Engine) -> None:
    outbox = outbox_store(engine)
    long_ago = NOW - OPT_OUT_GRACE - HOUR
    patients = {"out": "Patient/example-1", "in": "Patient/example-2", "just_out": "Patient/example-3",
                "confirming": "Patient/example-4"}
    for n, (name, patient) in enumerate(patients.items(), start=1):
        message(engine, outbox, f"sent-{name}", state="sent", changed_at=NOW - timedelta(days=3), patient=patient, n=n)
        with transaction(engine) as session:
            set_consent(session, patient, OPTED_IN if name == "in" else OPTED_OUT, "chat")
    # The STOP confirmation to this patient is still queued: their number must stay until it is sent.
    message(engine, outbox, "consent-confirming", state="queued", changed_at=NOW, patient=patients["confirming"], n=4,
            purpose="consent")
    with transaction(engine) as session:
        session.execute(update(table_of(ConsentRecord)).where(table_of(ConsentRecord).c.patient_ref != patients[
            "just_out"]).values(changed_at=long_ago))

    report = run_retention(engine, POLICY, now=NOW, actor="cli:tester")

    with Session(engine) as session:
        contacts = set(session.exec(select(WhatsAppContact.patient_ref)).all())
        recipients = {row.natural_key: row.recipient_enc for row in session.exec(select(OutboxMessage)).all()}
        consent = {row.patient_ref: row.status for row in session.exec(select(ConsentRecord)).all()}
    assert contacts == {patients["in"], patients["just_out"], patients["confirming"]}
    assert recipients["sent-out"] is None
    assert all(recipients[key] is not None for key in ("sent-in", "sent-just_out", "sent-confirming",
                                                         "consent-confirming"))
    assert consent[patients["out"]] == OPTED_OUT  # what keeps STOP honoured stays
    assert report.counts["opt_out_contact"] == 1 and report.counts["opt_out_recipient"] == 1
    assert rows_by_category(retention_events(engine)) == {"opt_out_contact": 1, "opt_out_recipient": 1}
    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester").total == 0


def test_purges_run_in_batches_each_audited_with_its_rows(engine: Engine) -> None:
    for day in range(5):
        skip(engine, f"rule-{day}", MESSAGE_EDGE - timedelta(days=day + 1))
    report = run_retention(engine, RetentionPolicy(link_days=30, message_days=90, batch_size=2), now=NOW,
                           actor="cli:tester")
    assert report.counts["notification_skip"] == 5
    events = retention_events(engine)
    assert [event["rows"] for event in events] == [2, 2, 1]
    assert {event["category"] for event in events} == {"notification_skip"}
    assert len({event["run"] for event in events}) == 1
    assert ids(engine, NotificationSkip) == set()


def test_a_dry_run_counts_and_changes_nothing(engine: Engine) -> None:
    mint_link(engine, expires_at=LINK_EDGE - HOUR)
    skip(engine, "old", MESSAGE_EDGE - HOUR)
    report = run_retention(engine, POLICY, now=NOW, actor="cli:tester", dry_run=True)
    assert report.dry_run and report.counts["link_token"] == 1 and report.counts["notification_skip"] == 1
    assert tuple(report.counts) == CATEGORY_NAMES
    assert len(ids(engine, LinkToken)) == 1 and len(ids(engine, NotificationSkip)) == 1
    assert retention_events(engine) == []


@pytest.mark.parametrize("held", ["Patient/example-1", None])
def test_a_legal_hold_keeps_the_rows_it_covers(engine: Engine, held: str | None) -> None:
    held_link = mint_link(engine, expires_at=LINK_EDGE - HOUR, patient="Patient/example-1")
    other_link = mint_link(engine, expires_at=LINK_EDGE - HOUR, patient="Patient/example-2")
    with transaction(engine) as session:
        session.execute(insert(table_of(LegalHold)).values(patient_ref=held, reason="litigation", created_by="x",
                                                           created_at=NOW))
    run_retention(engine, POLICY, now=NOW, actor="cli:tester")
    assert ids(engine, LinkToken) == ({held_link} if held else {held_link, other_link})


def cli_engine(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    from adapter.storage.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(engine)
    return engine


def test_the_cli_counts_then_purges(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from adapter.cli.retention import retention_app

    engine = cli_engine(tmp_path, monkeypatch)
    skip(engine, "old", utcnow() - timedelta(days=400))
    runner = CliRunner()
    counted = runner.invoke(retention_app, ["run", "--dry-run"])
    assert counted.exit_code == 0 and "notification_skip: would remove 1" in counted.output
    assert len(ids(engine, NotificationSkip)) == 1
    purged = runner.invoke(retention_app, ["run"])
    assert purged.exit_code == 0 and "notification_skip: removed 1" in purged.output
    assert ids(engine, NotificationSkip) == set()
    with Session(engine) as session:
        agents = session.exec(select(AuditEvent.agent).where(col(AuditEvent.kind) == "retention")).all()
    assert len(agents) == 1 and agents[0].startswith("cli:")
    engine.dispose()


def test_the_cli_purges_audit_records_only_when_asked(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from adapter.cli.retention import retention_app

    engine = cli_engine(tmp_path, monkeypatch)
    runner = CliRunner()
    without = runner.invoke(retention_app, ["run"])
    assert without.exit_code == 0 and "audit:" not in without.output
    with_audit = runner.invoke(retention_app, ["run", "--include-audit"])
    assert with_audit.exit_code == 0, with_audit.output
    assert "audit:" in with_audit.output
    with Session(engine) as session:
        details = session.exec(select(AuditEvent.detail).where(col(AuditEvent.entity_ref) == "audit-trail")).all()
    assert len(details) == 1  # the audit purge audited its own run
    engine.dispose()
