"""The undeliverable fallback hook over real HTTP: ids only, once, and retried when the hook fails."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.outbox.fallback_hook import FallbackHook
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import transaction, utcnow
from tests.support.asgi_server import serve_in_thread
from tests.support.stores import outbox_store

NUMBER = "+12015550177"


def undeliverable(outbox: OutboxStore) -> int:
    with transaction(outbox.engine) as session:
        outbox.enqueue(session, natural_key="u1", rule_id="results", resource_ref="DiagnosticReport/5",
                       patient_ref="Patient/5", recipient=NUMBER,
                       template={"name": "results_ready", "language": {"code": "en_US"}}, due_at=utcnow())
    [claimed] = outbox.claim_due(1)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "dead", error_code=131026,
                               error_class="UndeliverableError", dead_reason="UndeliverableError code=131026")])
    return claimed.outbox_id


async def test_undeliverable_messages_are_posted_once_with_ids_only(engine: Engine) -> None:
    received: list[dict[str, Any]] = []
    answers = [503, 200]
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        received.append(json.loads(await request.body()))
        return Response(status_code=answers.pop(0) if answers else 200)

    outbox = outbox_store(engine)
    outbox_id = undeliverable(outbox)
    with serve_in_thread(app) as url:
        runner = FallbackHook(outbox, f"{url}/hook")
        assert await runner.run_once() == 0  # the hook answered 503: kept for later
        runner._next_try = 0  # the retry delay has passed
        assert await runner.run_once() == 1
        assert await runner.run_once() == 0  # done: never posted twice
        await runner.aclose()
    assert len(received) == 2 and received[1] == {
        "event": "whatsapp.undeliverable", "outbox_id": outbox_id, "rule_id": "results",
        "resource": "DiagnosticReport/5", "patient": "Patient/5", "error_code": 131026,
        "reason": "UndeliverableError code=131026"}
    assert NUMBER[1:] not in json.dumps(received)
    with Session(engine) as session:
        assert session.exec(select(OutboxMessage.hook_state)).one() == "done"
