"""The 24-hour window runs from when a message reached us at the latest, over real HTTP, on SQLite and
PostgreSQL: a signed webhook whose ``timestamp`` is in the future (skewed, or forged with a leaked app
secret) does not keep the window open past 24 hours after its receipt, and one without a timestamp is
stored with its receipt time instead of being dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.chat import ChatReplies
from adapter.conversation.inbound import InboundProcessor
from adapter.conversation.tables import InboundMessage
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.recipients.contacts import ContactBook, window_open
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import transaction, utcnow
from mappings.conversation import Conversation
from tests.support.asgi_server import serve_in_thread
from tests.support.stores import outbox_store
from whatsapp.signature import HEADER, sign

SECRET = b"synthetic-app-secret"
WA_ID = "12015550142"  # +1 201-555-0142, fictional
REPLY = {"type": "text", "text": {"body": "Thank you, the clinic has your message."}}
FALLBACK = {"name": "service_update", "language": {"code": "en_US"}}


@dataclass
class Receiver:
    url: str
    outbox: OutboxStore
    processor: InboundProcessor

    def post(self, item: dict[str, Any]) -> httpx.Response:
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "200000000000002", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
                "contacts": [{"profile": {"name": "Synthetic"}, "wa_id": WA_ID}], "messages": [item]}}]}]}).encode()
        return httpx.post(self.url, content=body, timeout=10,
                          headers={HEADER: sign(body, SECRET), "Content-Type": "application/json"})


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Receiver]:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    processor = InboundProcessor(engine, ChatReplies(outbox, Conversation.load(), "en_US", "service_update",
                                                     ["en_US", "es"]))
    with transaction(engine) as session:  # the patient was messaged before: their number is on file
        set_consent(session, "Patient/w1", OPTED_IN, "admin")
        outbox.enqueue_message(session, natural_key="reply", rule_id="chat", resource_ref="Patient/w1",
                               patient_ref="Patient/w1", recipient=f"+{WA_ID}", message=REPLY, fallback=FALLBACK,
                               purpose="reply", due_at=utcnow() - timedelta(minutes=1))
    app = FastAPI()
    app.include_router(build_webhook_router(engine, [SECRET], "synthetic-verify", outbox.contacts))
    with serve_in_thread(app) as url:
        yield Receiver(f"{url}/whatsapp/webhook", outbox, processor)


def text(wamid: str, **fields: Any) -> dict[str, Any]:
    return {"from": WA_ID, "id": wamid, "type": "text", "text": {"body": "hello"}, **fields}


def received(engine: Engine) -> datetime:
    with Session(engine) as session:
        at = session.exec(select(InboundMessage)).one().received_at
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def outbox_id(engine: Engine, key: str) -> int:
    with Session(engine) as session:
        return session.exec(select(OutboxMessage.id).where(col(OutboxMessage.natural_key) == key)).one() or 0


def last_inbound(engine: Engine) -> datetime:
    with Session(engine) as session:
        [key] = session.exec(select(WhatsAppContact.phone_index)).all()
        return ContactBook.last_inbound(session, [key])[key]


def test_a_future_timestamp_opens_the_window_from_the_receipt_at_the_latest(receiver: Receiver,
                                                                             engine: Engine) -> None:
    month_ahead = int((utcnow() + timedelta(days=30)).timestamp())  # signed, in range, a month ahead
    assert receiver.post(text("wamid.FUTURE1", timestamp=str(month_ahead))).status_code == 200
    assert receiver.processor.process_pending() == 1
    receipt = received(engine)
    opened = last_inbound(engine)
    assert opened <= receipt  # never later than when it reached us
    assert window_open(opened, receipt + timedelta(hours=23, minutes=59))
    # A day and a second after the receipt the window is closed: the free-form reply becomes its template.
    claimed = receiver.outbox.claim_due(10, now=receipt + timedelta(hours=24, seconds=1))
    [reply] = [c for c in claimed if c.outbox_id == outbox_id(engine, "reply")]
    assert reply.request["type"] == "template" and reply.request["template"]["name"] == "service_update"


def test_a_message_without_a_timestamp_is_kept_and_dated_at_its_receipt(receiver: Receiver, engine: Engine) -> None:
    before = utcnow().replace(microsecond=0)
    assert receiver.post(text("wamid.NOTIME1")).status_code == 200
    assert receiver.processor.process_pending() == 1
    with Session(engine) as session:
        row = session.exec(select(InboundMessage)).one()
    assert before.timestamp() <= row.meta_timestamp <= utcnow().timestamp()
    assert before <= last_inbound(engine) <= received(engine)
