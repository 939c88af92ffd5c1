"""Audit entries of the WhatsApp side, on SQLite and PostgreSQL, through the real code paths: sends
(BALP PrivacyDisclosure) against the Cloud API emulator over loopback, statuses and forged webhooks
through the real receiver over loopback, inbound messages through the processor. Each entry commits
with its step, or not at all, and holds references only: never the number or the text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.conversation.chat import ChatReplies
from adapter.conversation.inbound import InboundProcessor
from adapter.conversation.webhook_store import store_batch
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.outbox.dispatch import Dispatcher, RetryPolicy
from adapter.outbox.encoding import callback_data
from adapter.outbox.fallback_hook import FallbackHook
from adapter.outbox.results import SendOutcome
from adapter.outbox.statuses import apply_pending
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import transaction, utcnow
from mappings.conversation import Conversation
from tests.support.asgi_server import serve_in_thread
from tests.support.stores import outbox_store
from whatsapp.emulator import EmulatorConfig, EmulatorServer
from whatsapp.sender import CloudApiSender
from whatsapp.signature import sign
from whatsapp.webhook import parse_webhook

TOKEN, SECRET, VERIFY = "synthetic-token", b"synthetic-app-secret", "synthetic-verify-token"
PHONE_NUMBER_ID = "100000000000001"
NUMBER, DIGITS = "+15550100123", "15550100123"  # the fictional +1 555 0100 nnn range
PATIENT = "Patient/example-1"
TEMPLATE = {"name": "appointment_confirmation", "language": {"code": "en_US"}, "components": [
    {"type": "body", "parameters": [{"type": "text", "text": "Tuesday, December 1, 2026"},
                                    {"type": "text", "text": "10:30 AM"}, {"type": "text", "text": "Main Campus"}]},
    {"type": "button", "sub_type": "quick_reply", "index": "0",
     "parameters": [{"type": "payload", "payload": "synthetic-token"}]}]}


def audit_rows(engine: Engine, kind: str | None = None) -> list[AuditEvent]:
    with Session(engine) as session:
        query = select(AuditEvent).order_by(col(AuditEvent.id))
        if kind:
            query = query.where(col(AuditEvent.kind) == kind)
        return list(session.exec(query))


def assert_no_phone_number(engine: Engine) -> None:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM audit_event")).all()
    flat = json.dumps([list(map(str, row)) for row in rows])
    assert rows and DIGITS not in flat and "5550100" not in flat


def detail(row: AuditEvent) -> dict[str, Any]:
    return dict(json.loads(row.detail or "{}"))


def enqueue(outbox: OutboxStore, key: str = "appointment.booked:Appointment/example-9/_history/1") -> None:
    with transaction(outbox.engine) as session:
        set_consent(session, PATIENT, OPTED_IN, "admin")
        outbox.enqueue(session, natural_key=key, rule_id="appointment.booked", resource_ref="Appointment/example-9",
                       patient_ref=PATIENT, recipient=NUMBER, template=TEMPLATE, due_at=utcnow())


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(EmulatorConfig(access_token=TOKEN, app_secret=SECRET.decode(), status_webhooks=False))
    server.start()
    yield server
    server.stop()


def dispatch(outbox: OutboxStore, emulator: EmulatorServer) -> int:
    async def tick() -> int:
        async with CloudApiSender(emulator.base_url, "v23.0", PHONE_NUMBER_ID, TOKEN, 5.0, 4) as sender:
            policy = RetryPolicy(max_attempts=5, base_seconds=0.001, max_seconds=0.001)  # retries due at once
            return await Dispatcher(outbox, sender, policy, batch_size=10, concurrency=2).run_once()
    return asyncio.run(tick())


def faults(emulator: EmulatorServer, *responses: dict[str, Any]) -> None:
    httpx.post(f"{emulator.base_url}/_emulator/faults", json={"responses": list(responses)},
               timeout=5).raise_for_status()


# --- sends: disclosures


def test_a_send_is_one_disclosure_with_the_patient_and_the_wamid_and_no_number(
        engine: Engine, emulator: EmulatorServer) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    assert dispatch(outbox, emulator) == 1
    with Session(engine) as session:
        sent = session.exec(select(OutboxMessage)).one()
    assert sent.state == "sent" and sent.wamid
    [disclosure] = audit_rows(engine, "disclosure")
    assert (disclosure.action, disclosure.outcome, disclosure.agent) == ("R", "0", "system")
    assert disclosure.patient_ref == PATIENT and disclosure.entity_ref == f"message/{sent.wamid}"
    assert detail(disclosure) == {"outbox": sent.id, "attempt": 1, "result": "sent", "type": "template",
                                  "template": "appointment_confirmation", "rule": "appointment.booked",
                                  "purpose": "notify"}
    assert audit_rows(engine) == [disclosure]  # nothing else was audited for it
    assert_no_phone_number(engine)


def test_a_sends_disclosure_exports_as_a_valid_r4_balp_audit_event(engine: Engine, emulator: EmulatorServer) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent as R4AuditEvent

    from adapter.audit.balp import to_audit_event

    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    dispatch(outbox, emulator)
    [disclosure] = audit_rows(engine, "disclosure")
    resource = to_audit_event(disclosure, None, source_observer="bridge.example.org")
    R4AuditEvent.model_validate(resource)  # raises when it is not a valid R4 AuditEvent
    assert resource["type"]["code"] == "110106" and resource["action"] == "R" and resource["outcome"] == "0"
    assert DIGITS not in json.dumps(resource)


def test_a_retry_then_a_success_is_one_failed_and_one_successful_disclosure(
        engine: Engine, emulator: EmulatorServer) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    faults(emulator, {"http_status": 500, "code": 131000})
    assert dispatch(outbox, emulator) == 1
    assert dispatch(outbox, emulator) == 1
    failed, accepted = audit_rows(engine, "disclosure")
    with Session(engine) as session:
        sent = session.exec(select(OutboxMessage)).one()
    assert (failed.outcome, failed.entity_ref, failed.patient_ref) == ("4", f"outbox/{sent.id}", PATIENT)
    assert detail(failed)["attempt"] == 1 and detail(failed)["result"] == "retry"
    assert detail(failed)["error_code"] == 131000 and detail(failed)["error_class"] == "RetryableError"
    assert (accepted.outcome, accepted.entity_ref) == ("0", f"message/{sent.wamid}")
    assert detail(accepted)["attempt"] == 2 and "error_code" not in detail(accepted)


def test_a_dead_letter_is_a_serious_failure(engine: Engine, emulator: EmulatorServer) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    faults(emulator, {"http_status": 400, "code": 131026})
    dispatch(outbox, emulator)
    [dead] = audit_rows(engine, "disclosure")
    assert (dead.outcome, detail(dead)["result"], detail(dead)["error_code"]) == ("8", "dead", 131026)


def test_a_send_step_that_rolls_back_leaves_no_audit_entry(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    [claimed] = outbox.claim_due(10)

    def fail(session: Session) -> None:  # the step fails after record(), at its commit
        raise RuntimeError("synthetic failure at commit")

    event.listen(Session, "before_commit", fail)
    try:
        with pytest.raises(RuntimeError, match="synthetic failure"):
            outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "sent", wamid="wamid.ROLLBACK1")])
    finally:
        event.remove(Session, "before_commit", fail)
    assert audit_rows(engine) == []
    with Session(engine) as session:
        assert session.exec(select(OutboxMessage)).one().state == "sending"  # nothing of the step remains


def test_a_paused_message_is_not_a_disclosure(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    [claimed] = outbox.claim_due(10)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "retry", retry_at=utcnow(),
                               error_class="SendingPaused", attempted=False)])
    assert audit_rows(engine) == []


# --- statuses and forged webhooks, through the receiver over loopback


@pytest.fixture
def receiver(engine: Engine) -> Iterator[tuple[str, OutboxStore]]:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    app = FastAPI()
    app.include_router(build_webhook_router(engine, [SECRET], VERIFY, outbox.contacts))
    with serve_in_thread(app) as url:
        yield f"{url}/whatsapp/webhook", outbox


def status_body(wamid: str, status: str, callback: str | None, error_code: int | None = None) -> bytes:
    item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(utcnow().timestamp())),
                            "recipient_id": DIGITS}
    if callback:
        item["biz_opaque_callback_data"] = callback
    if error_code:
        item["errors"] = [{"code": error_code, "title": "Message undeliverable"}]
    body = {"object": "whatsapp_business_account", "entry": [{"id": "200000000000002", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
                                       "statuses": [item]}}]}]}
    return json.dumps(body).encode()


def post(url: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(url, content=body, headers=headers, timeout=10)


def sent_row(outbox: OutboxStore, wamid: str) -> int:
    enqueue(outbox)
    [claimed] = outbox.claim_due(10)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "sent", wamid=wamid)])
    return claimed.outbox_id


def test_each_new_status_is_audited_once_with_its_patient(engine: Engine, receiver: tuple[str, OutboxStore]) -> None:
    url, outbox = receiver
    outbox_id = sent_row(outbox, "wamid.S1")
    delivered = status_body("wamid.S1", "delivered", callback_data(outbox_id))
    for _ in range(2):  # Meta delivers at least once: the repeat adds nothing
        assert post(url, delivered, sign(delivered, SECRET)).status_code == 200
    failed = status_body("wamid.S1", "failed", callback_data(outbox_id), error_code=131026)
    assert post(url, failed, sign(failed, SECRET)).status_code == 200
    first, second = audit_rows(engine, "status")
    assert (first.agent, first.action, first.outcome) == ("meta", "C", "0")
    assert first.patient_ref == PATIENT and first.entity_ref == "message/wamid.S1"
    assert detail(first) == {"status": "delivered"}
    assert second.patient_ref == PATIENT
    assert (second.outcome, detail(second)) == ("4", {"status": "failed", "error_code": 131026})
    assert_no_phone_number(engine)


def test_a_status_repeated_inside_one_webhook_is_audited_once(
        engine: Engine, receiver: tuple[str, OutboxStore]) -> None:
    url, _ = receiver
    document = json.loads(status_body("wamid.TWICE", "read", None))
    statuses = document["entry"][0]["changes"][0]["value"]["statuses"]
    statuses.append(dict(statuses[0]))
    body = json.dumps(document).encode()
    assert post(url, body, sign(body, SECRET)).status_code == 200
    assert [row.entity_ref for row in audit_rows(engine, "status")] == ["message/wamid.TWICE"]


def test_a_status_of_an_unknown_message_is_audited_without_a_patient(
        engine: Engine, receiver: tuple[str, OutboxStore]) -> None:
    url, _ = receiver
    body = status_body("wamid.UNKNOWN", "read", None)
    assert post(url, body, sign(body, SECRET)).status_code == 200
    [status] = audit_rows(engine, "status")
    assert status.patient_ref is None and status.entity_ref == "message/wamid.UNKNOWN"
    # A callback naming no outbox row is not trusted for a patient either.
    other = status_body("wamid.UNKNOWN2", "read", callback_data(999999))
    assert post(url, other, sign(other, SECRET)).status_code == 200
    assert [row.patient_ref for row in audit_rows(engine, "status")] == [None, None]


def test_a_status_that_settles_a_lost_answer_completes_the_disclosure(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    [claimed] = outbox.claim_due(10)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "ambiguous", retry_at=utcnow() + timedelta(
        minutes=2), error_class="AmbiguousSendError")])
    store_batch(engine, parse_webhook(status_body("wamid.LOST", "sent", callback_data(claimed.outbox_id))),
                outbox.contacts)
    apply_pending(engine)
    ambiguous, settled = audit_rows(engine, "disclosure")
    assert (ambiguous.outcome, detail(ambiguous)["result"]) == ("4", "ambiguous")
    assert (settled.outcome, settled.entity_ref, settled.patient_ref) == ("0", "message/wamid.LOST", PATIENT)
    assert detail(settled)["via"] == "status" and detail(settled)["attempt"] == 1


@pytest.mark.parametrize(("signature", "status_code", "reason"), [
    (None, 401, "signature-missing"), ("sha256=" + "0" * 64, 403, "signature-mismatch")])
def test_a_forged_or_unsigned_webhook_is_a_security_alert(
        engine: Engine, receiver: tuple[str, OutboxStore], signature: str | None, status_code: int,
        reason: str) -> None:
    url, _ = receiver
    body = status_body("wamid.FORGED", "read", None)
    assert post(url, body, signature).status_code == status_code
    [alert] = audit_rows(engine)
    assert (alert.kind, alert.action, alert.outcome, alert.agent) == ("security-alert", "E", "8", "meta")
    assert alert.source == "127.0.0.1" and detail(alert) == {"reason": reason}
    assert "wamid.FORGED" not in json.dumps([alert.entity_ref, alert.detail])  # the body is not kept
    assert audit_rows(engine, "status") == []


def test_a_flood_of_forged_webhooks_adds_one_alert_per_source_and_minute(
        engine: Engine, receiver: tuple[str, OutboxStore]) -> None:
    url, _ = receiver
    body = status_body("wamid.FORGED", "read", None)
    assert {post(url, body, "sha256=" + "1" * 64).status_code for _ in range(150)} == {403}
    reasons = [detail(row)["reason"] for row in audit_rows(engine)]
    # one in full per minute; a minute that ended during the flood adds its one summary entry
    first = "signature-mismatch"
    assert reasons in ([first], [first, first, "refusals-summarised"]), reasons


# --- inbound messages and hand-offs


def processor_for(engine: Engine) -> tuple[OutboxStore, InboundProcessor]:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    replies = ChatReplies(outbox, Conversation.load(), "en_US", "service_update", ["en_US", "es"])
    return outbox, InboundProcessor(engine, replies)


def text_body(wamid: str, words: str) -> dict[str, Any]:
    item = {"from": DIGITS, "id": wamid, "timestamp": str(int(utcnow().timestamp())), "type": "text",
            "text": {"body": words}}
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
             "contacts": [{"profile": {"name": "Synthetic"}, "wa_id": DIGITS}], "messages": [item]}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "200000000000002", "changes": [{"field": "messages", "value": value}]}]}


def deliver(engine: Engine, processor: InboundProcessor, body: dict[str, Any]) -> None:
    store_batch(engine, parse_webhook(body), processor.contacts)
    processor.process_pending()


def test_an_inbound_stop_is_audited_with_its_outcome_and_without_its_text(engine: Engine) -> None:
    outbox, processor = processor_for(engine)
    enqueue(outbox, "reminder:1")
    enqueue(outbox, "reminder:2")
    deliver(engine, processor, text_body("wamid.IN1", "STOP"))
    [entry] = audit_rows(engine, "inbound")
    assert (entry.action, entry.outcome, entry.agent) == ("C", "0", "patient")
    assert entry.patient_ref == PATIENT and entry.entity_ref == "message/wamid.IN1"
    assert detail(entry) == {"type": "text", "outcome": "opted_out", "suppressed": 2}
    assert "STOP" not in (entry.detail or "").upper()  # the words themselves are not kept
    assert_no_phone_number(engine)
    deliver(engine, processor, text_body("wamid.IN1", "STOP"))  # a repeat is not processed twice
    assert len(audit_rows(engine, "inbound")) == 1


def test_an_unknown_sender_is_audited_without_a_patient(engine: Engine) -> None:
    _, processor = processor_for(engine)
    deliver(engine, processor, text_body("wamid.IN2", "hello"))
    [entry] = audit_rows(engine, "inbound")
    assert entry.patient_ref is None and detail(entry) == {"type": "text", "outcome": "unknown_sender"}


def test_a_card_number_is_audited_as_its_kind_only(engine: Engine) -> None:
    outbox, processor = processor_for(engine)
    enqueue(outbox)
    deliver(engine, processor, text_body("wamid.IN3", "my card is 4111 1111 1111 1111"))
    [entry] = audit_rows(engine, "inbound")
    assert detail(entry)["outcome"] == "sensitive" and detail(entry)["redacted"]
    assert "4111" not in (entry.detail or "")


@pytest.mark.parametrize(("words", "outcome", "reason", "urgent"), [
    ("talk to staff", "staff", "patient-asked-for-staff", False), ("chest pain", "emergency", "emergency-word", True)])
def test_a_handoff_is_audited_with_the_inbound_message(engine: Engine, words: str, outcome: str, reason: str,
                                                        urgent: bool) -> None:
    outbox, processor = processor_for(engine)
    enqueue(outbox)
    deliver(engine, processor, text_body("wamid.IN4", words))
    [handoff] = audit_rows(engine, "handoff")
    assert (handoff.action, handoff.agent, handoff.patient_ref) == ("C", "patient", PATIENT)
    assert detail(handoff) == {"event": "start", "reason": reason, **({"urgent": True} if urgent else {})}
    [entry] = audit_rows(engine, "inbound")
    assert detail(entry)["outcome"] == outcome


def test_a_failed_inbound_step_leaves_only_its_failure_entry(engine: Engine) -> None:
    outbox, processor = processor_for(engine)
    enqueue(outbox)
    store_batch(engine, parse_webhook(text_body("wamid.IN5", "talk to staff")), processor.contacts)

    def fail(session: Session) -> None:
        raise RuntimeError("synthetic failure at commit")

    event.listen(Session, "before_commit", fail)
    try:
        with pytest.raises(RuntimeError, match="synthetic failure"):
            processor.process_pending()
    finally:
        event.remove(Session, "before_commit", fail)
    assert audit_rows(engine) == []  # neither the inbound entry nor the hand-off survived the rollback
    processor.process_pending()  # the message is still pending, and is audited once when it succeeds
    assert [row.kind for row in audit_rows(engine)] == ["handoff", "inbound"]


# --- the fallback hook


async def test_a_delivered_fallback_hook_call_is_a_disclosure(engine: Engine) -> None:
    app = FastAPI()

    @app.post("/hook")
    async def hook() -> dict[str, str]:
        return {}

    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox)
    [claimed] = outbox.claim_due(1)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "dead", error_code=131026,
                               error_class="UndeliverableError", dead_reason="UndeliverableError code=131026")])
    with serve_in_thread(app) as url:
        runner = FallbackHook(outbox, f"{url}/hook")
        assert await runner.run_once() == 1
        await runner.aclose()
    dead, hooked = audit_rows(engine, "disclosure")
    assert dead.outcome == "8"
    assert (hooked.outcome, hooked.patient_ref, hooked.entity_ref) == ("0", PATIENT, f"outbox/{claimed.outbox_id}")
    assert detail(hooked) == {"outbox": claimed.outbox_id, "via": "fallback-hook", "rule": "appointment.booked",
                              "error_code": 131026}
