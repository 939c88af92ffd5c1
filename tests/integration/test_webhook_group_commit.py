"""Group commit of WhatsApp webhooks, over real loopback HTTP against the real app (``create_app``,
lifespan on), on SQLite and PostgreSQL: concurrent signed webhooks share transactions, each is
answered 200 only after its commit and stored once, and a webhook whose write fails in a shared
group fails alone (503 with ``Retry-After``, so Meta sends it again) while the others of its group
are stored. A webhook the parser accepts always fits the tables, so the failing write is made by a
trigger that refuses one marked message id: a real database error, on both databases.

Commits are counted with SQLAlchemy events (``before_cursor_execute`` marks a connection that
inserted webhook items; ``commit`` / ``rollback`` count it): a count of transactions, not a timing.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from adapter.app import create_app
from adapter.audit.tables import AuditEvent
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.outbox.tables import WhatsAppStatus
from adapter.settings import load_settings
from adapter.storage.db import make_engine
from tests.support.asgi_server import serve_in_thread
from tests.support.stores import contact_book
from whatsapp.signature import HEADER, sign

REQUESTS = 50
BAD_EVERY = 10  # requests 0, 10, 20, … carry a message id the database refuses (refuse_marked)
WEBHOOK_TABLES = ("INSERT INTO wa_status", "INSERT INTO wa_inbound")
REFUSED_MARK = "REFUSED"


def status_body(n: int, timestamp: int, refused: bool = False) -> bytes:
    item = {"id": f"wamid.GROUP{n:03d}{REFUSED_MARK if refused else ''}", "status": "delivered",
            "timestamp": str(timestamp), "recipient_id": "12015550100"}
    body = {"object": "whatsapp_business_account", "entry": [{"id": "200000000000002", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
                                       "statuses": [item]}}]}]}
    return json.dumps(body).replace("/", "\\/").encode()


class WebhookTransactions:
    """Counts the transactions that inserted webhook items, by how they ended."""

    def __init__(self, engine: Engine) -> None:
        self.commits = self.rollbacks = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._mark)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _mark(self, connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(WEBHOOK_TABLES):
            connection.info["webhook_write"] = True

    def _commit(self, connection: Any) -> None:
        if connection.info.pop("webhook_write", False):
            with self._lock:
                self.commits += 1

    def _rollback(self, connection: Any) -> None:
        if connection.info.pop("webhook_write", False):
            with self._lock:
                self.rollbacks += 1


def refuse_marked(engine: Engine) -> None:
    """A trigger that makes the insert of a status whose message id carries ``REFUSED_MARK`` fail."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(
                "CREATE FUNCTION refuse_marked() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.wamid LIKE '%{REFUSED_MARK}%' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            connection.execute(text("CREATE TRIGGER refuse_marked BEFORE INSERT ON wa_status FOR EACH ROW "
                                    "EXECUTE FUNCTION refuse_marked()"))
        else:
            connection.execute(text(
                f"CREATE TRIGGER refuse_marked BEFORE INSERT ON wa_status WHEN NEW.wamid LIKE '%{REFUSED_MARK}%' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))


@contextmanager
def writes_held(engine: Engine) -> Iterator[None]:
    """Holds off every webhook write (a lock the inserts wait for) until the block ends, so the
    requests sent meanwhile queue up behind the first group."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("LOCK TABLE wa_status IN EXCLUSIVE MODE"))
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.rollback()


async def post_all(url: str, bodies: list[bytes], secret: bytes) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=REQUESTS)) as client:
        async def post(body: bytes) -> int:
            headers = {"Content-Type": "application/json", HEADER: sign(body, secret)}
            return (await client.post(url, content=body, headers=headers)).status_code
        return list(await asyncio.gather(*(post(body) for body in bodies)))


def test_concurrent_webhooks_share_commits_and_a_bad_one_fails_alone(database_url: str) -> None:
    settings = load_settings(mode="demo", database_url=database_url, manage_subscriptions=False,
                             whatsapp_sync_templates=False, fhir_base_url="http://127.0.0.1:9/fhir")
    secret = settings.whatsapp_app_secret.get_secret_value().encode()
    app = create_app(settings)
    engine = app.state.service.engine
    good = [status_body(n, 1_700_000_000 + n) for n in range(REQUESTS)]
    # Then a mixed burst: every tenth webhook carries a message id the database refuses.
    bad = {n for n in range(REQUESTS, 2 * REQUESTS) if n % BAD_EVERY == 0}
    mixed = [status_body(n, 1_700_000_000 + n, refused=n in bad) for n in range(REQUESTS, 2 * REQUESTS)]
    with serve_in_thread(app, lifespan="on") as root:
        refuse_marked(engine)  # after the lifespan's migrations
        url = f"{root}/whatsapp/webhook"
        counted = WebhookTransactions(engine)
        answers = burst(engine, url, good, secret)
        shared = (counted.commits, counted.rollbacks)
        mixed_answers = burst(engine, url, mixed, secret)
        repeat = asyncio.run(post_all(url, [good[1], mixed[2]], secret))  # a repeat has no second effect

    assert answers == [200] * REQUESTS
    assert shared[0] < REQUESTS and shared[1] == 0  # the requests shared commits
    expected = [503 if n in bad else 200 for n in range(REQUESTS, 2 * REQUESTS)]
    assert mixed_answers == expected  # the refused ones got 503 (Meta retries them); the others 200
    # A shared group holding a bad webhook was rolled back, then its webhooks were written one by one.
    assert counted.rollbacks - shared[1] > len(bad)
    assert repeat == [200, 200]
    stored_ids = [n for n in range(2 * REQUESTS) if n not in bad]
    with Session(engine) as session:
        stored = session.exec(select(WhatsAppStatus.wamid, func.count()).group_by(col(WhatsAppStatus.wamid))).all()
        audited = session.exec(select(func.count()).select_from(AuditEvent)
                               .where(col(AuditEvent.entity_ref).like("message/wamid.GROUP%"))).one()
    assert sorted(stored) == [(f"wamid.GROUP{n:03d}", 1) for n in stored_ids]  # each stored once
    assert audited == len(stored_ids)  # one audit entry per stored status, none for the failed ones


def burst(engine: Engine, url: str, bodies: list[bytes], secret: bytes) -> list[int]:
    """Posts ``bodies`` at once while the writes are held, so they queue up and share groups."""
    answers: list[int] = []
    with writes_held(engine):
        sender = threading.Thread(target=lambda: answers.extend(asyncio.run(post_all(url, bodies, secret))))
        sender.start()
        sender.join(timeout=1.5)  # the requests arrive and wait behind the held lock
    sender.join(timeout=60)
    return answers


def test_an_unreachable_database_answers_503_with_retry_after() -> None:
    """Nothing is acknowledged that was not stored: Meta keeps the webhooks and retries them (503 with
    ``Retry-After``, as the EHR intake answers; tests/integration/test_hostile_input_webhook.py has both
    databases)."""
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/nowhere")  # nothing listens on port 9
    secret = b"synthetic-app-secret"
    app = FastAPI()
    app.include_router(build_webhook_router(engine, [secret], "synthetic-verify-token", contact_book()))
    with serve_in_thread(app, lifespan="on") as root:
        answers = asyncio.run(post_all(f"{root}/whatsapp/webhook", [status_body(n, 1) for n in range(5)], secret))
    engine.dispose()
    assert answers == [503] * 5
