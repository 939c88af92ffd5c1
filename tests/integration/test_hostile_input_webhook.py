"""Signed but hostile or malformed WhatsApp webhooks over real loopback HTTP, on SQLite and PostgreSQL:
never a 5xx for what the body holds; a bad item is dropped or bounded (with a log line) and the good
items of its webhook are stored and then applied by the status step; a body that is no webhook at all
is a 400. A database that cannot be reached is a 503 with ``Retry-After``, and the webhook Meta sends
again afterwards is stored.

The signature is real (any signed body is possible once an app secret leaks, or Meta has a bug).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.conversation.content import decode_content
from adapter.conversation.tables import InboundMessage
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.outbox.encoding import callback_data
from adapter.outbox.statuses import apply_pending
from adapter.outbox.tables import WhatsAppStatus
from adapter.recipients.contacts import ContactBook
from adapter.storage.db import make_engine, upgrade
from tests.support.asgi_server import serve_in_thread
from tests.support.stores import contact_book
from whatsapp.signature import HEADER, sign

SECRET, VERIFY = b"synthetic-app-secret", "synthetic-verify-token"
GOOD_TS = 1_700_000_000


class Receiver:
    def __init__(self, url: str, engine: Engine, contacts: ContactBook) -> None:
        self.url, self.engine, self.contacts = url, engine, contacts

    def post(self, body: bytes | str) -> httpx.Response:
        raw = body.encode() if isinstance(body, str) else body
        return httpx.post(self.url, content=raw, timeout=30,
                          headers={"Content-Type": "application/json", HEADER: sign(raw, SECRET)})

    def statuses(self) -> dict[str, WhatsAppStatus]:
        with Session(self.engine) as session:
            return {row.wamid: row for row in session.exec(select(WhatsAppStatus))}


@contextmanager
def serve(engine: Engine) -> Iterator[Receiver]:
    contacts = contact_book()
    app = FastAPI()
    app.include_router(build_webhook_router(engine, [SECRET], VERIFY, contacts))
    with serve_in_thread(app, lifespan="on") as root:
        yield Receiver(f"{root}/whatsapp/webhook", engine, contacts)


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Receiver]:
    with serve(engine) as running:
        yield running


def webhook(statuses: Sequence[Any] = (), messages: Sequence[Any] = ()) -> str:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"}}
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["messages"] = list(messages)
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "200000000000002", "changes": [{"field": "messages", "value": value}]}]})


def status(wamid: str, timestamp: Any = GOOD_TS, **fields: Any) -> dict[str, Any]:
    return {"id": wamid, "status": "delivered", "timestamp": str(timestamp), "recipient_id": "12015550100", **fields}


def text_message(wamid: str, body: str, timestamp: Any = GOOD_TS) -> dict[str, Any]:
    return {"from": "12015550100", "id": wamid, "timestamp": str(timestamp), "type": "text", "text": {"body": body}}


def test_a_30_digit_timestamp_does_not_sink_the_good_statuses_of_its_batch(receiver: Receiver,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    before = int(time.time())
    body = webhook([status("wamid.H1"), status("wamid.H2", "9" * 30), status("wamid.H3", GOOD_TS + 1)])
    response = receiver.post(body)
    assert response.status_code == 200, response.text
    assert receiver.post(body).status_code == 200  # Meta's retry is a no-op, not a second failure
    stored = receiver.statuses()
    assert sorted(stored) == ["wamid.H1", "wamid.H2", "wamid.H3"]
    assert (stored["wamid.H1"].meta_timestamp, stored["wamid.H3"].meta_timestamp) == (GOOD_TS, GOOD_TS + 1)
    assert before <= stored["wamid.H2"].meta_timestamp <= int(time.time())  # the time of receipt stands in
    assert "statuses[1].timestamp is out of range" in caplog.text and "9" * 30 not in caplog.text
    assert apply_pending(receiver.engine) == 3  # and the status step applies them
    with Session(receiver.engine) as session:
        audited = session.exec(select(AuditEvent.entity_ref).where(col(AuditEvent.kind) == "status")).all()
    assert sorted(audited) == ["message/wamid.H1", "message/wamid.H2", "message/wamid.H3"]


def test_timestamps_past_2038_never_reach_the_4_byte_columns(receiver: Receiver) -> None:
    before = int(time.time())
    response = receiver.post(webhook([status("wamid.Y1", 2**31), status("wamid.Y2", -1)],
                                     [text_message("wamid.Y3", "hello", 2**31)]))
    assert response.status_code == 200, response.text
    stored = receiver.statuses()
    assert all(before <= stored[w].meta_timestamp <= int(time.time()) for w in ("wamid.Y1", "wamid.Y2"))
    with Session(receiver.engine) as session:
        [message] = session.exec(select(InboundMessage)).all()
    # The time of receipt, not 2038: a clamped future time would hold the 24-hour window open for years.
    assert before <= message.meta_timestamp <= int(time.time())


def test_unreadable_items_are_skipped_and_the_readable_ones_stored(receiver: Receiver) -> None:
    response = receiver.post(webhook([
        status("wamid.U1"),
        {"status": "read", "timestamp": "1"},  # no id
        status("wamid.U2", "yesterday"),  # no number
        status("w" * 129),  # longer than any id
        {**status("wamid.U3"), "status": "s" * 17},  # no status is that long
        "not an object",
        status("wamid.U4", errors=[{"code": 10**12, "title": "synthetic"}], status="failed"),
    ]))
    assert response.status_code == 200, response.text
    stored = receiver.statuses()
    assert sorted(stored) == ["wamid.U1", "wamid.U4"]
    assert stored["wamid.U4"].error_code is None  # beyond the 4-byte column: unknown, not a failed insert
    assert apply_pending(receiver.engine) == 2


@pytest.mark.parametrize("callback", ["outbox:" + "9" * 30, f"outbox:{2**64}", f"outbox:{2**40}", "outbox:\u00b2",
                                      "c" * 513])
def test_callback_data_naming_no_possible_outbox_row_is_ignored_as_unknown(receiver: Receiver, callback: str) -> None:
    response = receiver.post(webhook([status("wamid.C1", biz_opaque_callback_data=callback),
                                      status("wamid.C2", biz_opaque_callback_data=callback_data(7))]))
    assert response.status_code == 200, response.text
    stored = receiver.statuses()
    assert (stored["wamid.C1"].callback_data, stored["wamid.C2"].callback_data) == (None, "outbox:7")
    assert apply_pending(receiver.engine) == 2


def test_a_lone_surrogate_or_nul_in_text_and_ids_is_stored_as_u_fffd(receiver: Receiver) -> None:
    body = webhook([status("wamid.S\u0000")], [text_message("wamid.TXT", "hi SURROGATE")])
    response = receiver.post(body.replace("SURROGATE", "\\ud800"))  # a JSON escape no UTF-8 encoder takes
    assert response.status_code == 200, response.text
    assert list(receiver.statuses()) == ["wamid.S\ufffd"]
    with Session(receiver.engine) as session:
        [row] = session.exec(select(InboundMessage)).all()
    assert row.wamid == "wamid.TXT"
    assert decode_content(receiver.contacts.cipher, row).text == "hi \ufffd"


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"object":"whatsapp_business_account","entry":' + b"[" * 100_000])
def test_deeply_nested_json_is_a_400(receiver: Receiver, body: bytes) -> None:
    response = receiver.post(body)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


def test_a_body_with_no_readable_item_is_a_400_and_stores_nothing(receiver: Receiver) -> None:
    response = receiver.post(webhook([status("wamid.N1", "Infinity")]).replace('"Infinity"', "Infinity"))
    assert response.status_code == 400
    assert "timestamp is not Unix seconds" in response.json()["error"]
    assert receiver.statuses() == {}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_that_cannot_be_reached_is_a_503_with_retry_after(kind: str, tmp_path: Path) -> None:
    if kind == "sqlite":  # a file in a directory that does not exist yet: SQLite cannot open it
        url = f"sqlite:///{tmp_path / 'not-yet' / 'bridge.db'}"
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"  # nothing listens on port 9
    engine = make_engine(url)
    body = webhook([status("wamid.D1")])
    try:
        with serve(engine) as receiver:
            response = receiver.post(body)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "5"
            unsigned = httpx.post(receiver.url, content=b"{}", timeout=10)
            assert unsigned.status_code == 401  # its security alert cannot be written: refused all the same
    finally:
        engine.dispose()
    if kind == "sqlite":  # the database comes back: Meta's retry of the same webhook is stored
        (tmp_path / "not-yet").mkdir()
        engine = make_engine(url)
        upgrade(engine)
        try:
            with serve(engine) as receiver:
                assert receiver.post(body).status_code == 200
                assert list(receiver.statuses()) == ["wamid.D1"]
        finally:
            engine.dispose()
