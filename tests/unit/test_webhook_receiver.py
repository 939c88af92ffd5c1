"""The WhatsApp webhook receiver over real loopback HTTP, on SQLite and PostgreSQL: verification,
signature over raw bytes (fail closed), durable dedupe before the 200; then the pipeline's status
step: monotonic statuses, ambiguous-send reconciliation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.conversation.tables import InboundMessage
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.ops.alerts import open_alerts
from adapter.outbox.encoding import callback_data
from adapter.outbox.statuses import apply_pending
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage, TemplateState, WhatsAppStatus
from adapter.storage.db import transaction, utcnow
from tests.support.asgi_server import serve_in_thread
from tests.support.stores import contact_book, outbox_store
from whatsapp.signature import sign

SECRET, OLD_SECRET, VERIFY = b"synthetic-app-secret", b"synthetic-old-secret", "synthetic-verify-token"


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def append_one(self) -> None:
        self.count += 1


wakes = Wakes()


@pytest.fixture
def receiver(engine: Engine) -> Iterator[tuple[str, OutboxStore]]:
    outbox = outbox_store(engine)
    app = FastAPI()
    app.include_router(build_webhook_router(engine, [SECRET, OLD_SECRET], VERIFY, outbox.contacts,
                                            on_stored=wakes.append_one))
    with serve_in_thread(app) as url:
        yield f"{url}/whatsapp/webhook", outbox


def status_body(wamid: str, status: str, ts: int, callback: str | None = None) -> bytes:
    item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(ts), "recipient_id": "12015550100"}
    if callback:
        item["biz_opaque_callback_data"] = callback
    body = {"object": "whatsapp_business_account", "entry": [{"id": "200000000000002", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
                                       "statuses": [item]}}]}]}
    # Meta escapes "/" and non-ASCII: re-serialised JSON would not match the signature.
    return json.dumps(body, ensure_ascii=True).replace("/", "\\/").encode()


def post(url: str, body: bytes, secret: bytes | None = SECRET) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    return httpx.post(url, content=body, headers=headers, timeout=5)


def sent_row(outbox: OutboxStore, wamid: str | None = "wamid.S1", state: str = "sent") -> int:
    now = utcnow()
    with transaction(outbox.engine) as session:
        row = OutboxMessage(natural_key=f"k-{wamid}", rule_id="r", resource_ref="Appointment/1",
                            patient_ref="Patient/1", state=state, due_at=now, wamid=wamid, created_at=now,
                            updated_at=now)
        session.add(row)
        session.flush()
        return row.id or 0


def test_verification_handshake(receiver: tuple[str, OutboxStore]) -> None:
    url, _ = receiver
    challenge = "synthetic-challenge-42"
    ok = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": challenge})
    assert ok.status_code == 200 and ok.text == challenge and ok.headers["content-type"].startswith("text/plain")
    bad = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"})
    assert bad.status_code == 403


def test_signature_missing_wrong_and_rotated(receiver: tuple[str, OutboxStore], engine: Engine) -> None:
    url, _ = receiver
    body = status_body("wamid.X", "sent", 1)
    assert post(url, body, secret=None).status_code == 401
    assert post(url, body, secret=b"not-the-secret").status_code == 403
    assert post(url, body + b" ", secret=SECRET).status_code == 200  # signed over exactly these bytes
    assert post(url, body, secret=OLD_SECRET).status_code == 200  # the previous secret during a rotation
    with Session(engine) as session:
        assert len(session.exec(select(WhatsAppStatus)).all()) == 1  # the repeat was a no-op


def test_statuses_are_monotonic_whatever_their_order(receiver: tuple[str, OutboxStore], engine: Engine) -> None:
    url, outbox = receiver
    row_id = sent_row(outbox)
    before = wakes.count
    for status, ts in (("read", 30), ("sent", 10), ("delivered", 20)):
        assert post(url, status_body("wamid.S1", status, ts)).status_code == 200
    assert wakes.count == before + 3  # each stored status woke the pipeline
    with Session(engine) as session:  # stored, not yet applied
        row = session.get(OutboxMessage, row_id)
        assert row is not None and row.delivery_status is None
    assert apply_pending(engine, limit=2) == 2 and apply_pending(engine) == 1 and apply_pending(engine) == 0
    with Session(engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None and row.delivery_status == "read" and row.delivery_status_ts == 30


def test_status_with_callback_data_settles_an_ambiguous_send(receiver: tuple[str, OutboxStore],
                                                             engine: Engine) -> None:
    url, outbox = receiver
    row_id = sent_row(outbox, wamid=None, state="queued")  # waiting out the grace period of a lost answer
    assert post(url, status_body("wamid.LATE", "sent", 5, callback=callback_data(row_id))).status_code == 200
    apply_pending(engine)
    with Session(engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None and row.state == "sent" and row.wamid == "wamid.LATE"


def test_oversized_and_malformed_bodies(receiver: tuple[str, OutboxStore]) -> None:
    url, _ = receiver
    assert post(url, b"x" * (1024 * 1024 + 1)).status_code == 413
    assert post(url, b'{"object": "page"}').status_code == 400


def test_no_app_secret_refuses_to_build(engine: Engine) -> None:
    with pytest.raises(ValueError, match="fail closed"):
        build_webhook_router(engine, [], VERIFY, contact_book())


def test_a_signature_over_re_serialised_json_is_refused_and_meta_escaping_accepted(
        receiver: tuple[str, OutboxStore], engine: Engine) -> None:
    url, _ = receiver
    document = json.loads(status_body("wamid.ESC", "sent", 1))
    document["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"] = [
        {"code": 131026, "title": "Mensaje no entregado — señal/cobertura"}]
    escaped = json.dumps(document, ensure_ascii=True).replace("/", "\\/").encode()  # as Meta sends it
    reserialised = json.dumps(json.loads(escaped), ensure_ascii=False).encode()  # what a careless receiver checks
    assert escaped != reserialised
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(reserialised, SECRET)}
    assert httpx.post(url, content=escaped, headers=headers, timeout=5).status_code == 403
    assert post(url, escaped).status_code == 200
    with Session(engine) as session:
        stored = session.exec(select(WhatsAppStatus)).one()
        assert stored.error_code == 131026 and stored.error_title == "Mensaje no entregado — señal/cobertura"


def test_inbound_content_is_stored_encrypted_once(receiver: tuple[str, OutboxStore], engine: Engine) -> None:
    url, _ = receiver
    body = {"object": "whatsapp_business_account", "entry": [{"id": "2", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"},
        "contacts": [{"profile": {"name": "Synthetic"}, "wa_id": "12015550142"}],
        "messages": [{"from": "12015550142", "id": "wamid.IN1", "timestamp": "1700000000", "type": "text",
                      "text": {"body": "synthetic question about my visit"}}]}}]}]}
    raw = json.dumps(body).replace("/", "\\/").encode()
    for _ in range(3):
        assert post(url, raw).status_code == 200
    with Session(engine) as session:
        [row] = session.exec(select(InboundMessage)).all()
    assert row.state == "pending" and row.content_enc is not None
    assert "synthetic question" not in row.content_enc and "12015550142" not in row.content_enc


def template_event(event: str, name: str = "results_ready", language: str = "en_US") -> bytes:
    body = {"object": "whatsapp_business_account", "entry": [{"id": "2", "time": 1700000000, "changes": [{
        "field": "message_template_status_update",
        "value": {"event": event, "message_template_id": 7001, "message_template_name": name,
                  "message_template_language": language, "reason": None}}]}]}
    return json.dumps(body).replace("/", "\\/").encode()


def test_template_status_webhooks_update_states_and_alert(receiver: tuple[str, OutboxStore],
                                                          engine: Engine) -> None:
    url, _ = receiver
    assert post(url, template_event("APPROVED")).status_code == 200
    assert post(url, template_event("PAUSED")).status_code == 200
    with Session(engine) as session:
        assert session.get(TemplateState, ("results_ready", "en_US")).status == "PAUSED"  # type: ignore[union-attr]
    assert [a.kind for a in open_alerts(engine)] == ["template_not_approved"]
    assert post(url, template_event("FLAGGED")).status_code == 200  # a warning, not a state
    assert post(url, template_event("REINSTATED")).status_code == 200
    with Session(engine) as session:
        assert session.get(TemplateState, ("results_ready", "en_US")).status == "APPROVED"  # type: ignore[union-attr]
    assert sorted(a.kind for a in open_alerts(engine)) == ["template_event", "template_not_approved"]
