"""The action runner with an in-memory EHR writer, on SQLite and PostgreSQL: hand-offs reach the
staff inbox (ids only), an unreachable EHR is retried and then fails visibly, and every outcome is
answered once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.actions import MAX_ATTEMPTS, ActionRunner
from adapter.conversation.chat import ChatReplies
from adapter.conversation.tables import ActionRequest, Conversation
from adapter.ops.alerts import open_alerts
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import transaction, utcnow
from ehr.errors import FhirUnavailableError
from ehr.writeback import WriteOutcome
from mappings.conversation import Conversation as Texts
from tests.support.asgi_server import serve_in_thread
from tests.support.bodies import body
from tests.support.stores import outbox_store

NUMBER = "+12015550181"


class FakeWriter:
    """An :class:`ehr.writeback.AppointmentWriter` stand-in: answers from a script, counts calls."""

    def __init__(self, *, confirm: WriteOutcome | Exception | None = None) -> None:
        self.confirm_answer = confirm
        self.calls: list[str] = []
        self.tasks: dict[str, bool] = {}

    async def confirm(self, appointment_ref: str, patient_ref: str, version_at_send: str | None) -> WriteOutcome:
        self.calls.append("confirm")
        if isinstance(self.confirm_answer, Exception):
            raise self.confirm_answer
        return self.confirm_answer or WriteOutcome("confirmed", {"status": "booked"})

    async def handoff(self, *, patient_ref: str, focus_ref: str | None, reason: str, urgent: bool,
                      request_key: str | None = None) -> str:
        self.calls.append(f"handoff:{urgent}")
        task = f"Task/t{len(self.tasks) + 1}"
        self.tasks[task] = True
        return task

    async def task_open(self, task_ref: str) -> bool:
        return self.tasks.get(task_ref, False)


def runner(engine: Engine, writer: FakeWriter, inbox_url: str | None = None) -> ActionRunner:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    with transaction(engine) as session:
        outbox.contacts.remember(session, "Patient/1", NUMBER)
    replies = ChatReplies(outbox, Texts.load(), "en_US", "service_update", ["en_US", "es"])
    return ActionRunner(engine, writer, replies, zone=ZoneInfo("America/New_York"),  # type: ignore[arg-type]
                        handoff_timeout=timedelta(hours=2), staff_inbox_url=inbox_url)


def request(engine: Engine, kind: str, *, urgent: bool = False) -> int:
    index = outbox_store(engine).contacts.index.phone(NUMBER)
    with transaction(engine) as session:
        row = ActionRequest(dedupe_key=f"{kind}:1", kind=kind, patient_ref="Patient/1",
                            resource_ref="Appointment/1", version_id="1", phone_index=index, language="en_US",
                            urgent=urgent, next_attempt_at=utcnow(), created_at=utcnow())
        session.add(row)
        session.flush()
        return row.id or 0


def replies(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [body(r).get("text", {}).get("body", "")
                for r in session.exec(select(OutboxMessage).where(col(OutboxMessage.rule_id) == "chat.reply"))]


async def test_a_handoff_creates_a_task_tells_the_staff_inbox_and_silences_the_bot(engine: Engine) -> None:
    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/inbox")
    async def inbox(body: Request) -> Response:
        received.append(json.loads(await body.body()))
        return Response(status_code=204)

    writer = FakeWriter()
    with serve_in_thread(app) as url:
        actions = runner(engine, writer, f"{url}/inbox")
        request(engine, "handoff", urgent=True)
        assert await actions.run_once() == 1
        await actions.aclose()
    assert writer.calls == ["handoff:True"]
    assert received == [{"event": "whatsapp.handoff", "task": "Task/t1", "patient": "Patient/1",
                         "focus": "Appointment/1", "urgent": True, "reason": None}]
    assert NUMBER[1:] not in json.dumps(received)
    with Session(engine) as session:
        conversation = session.exec(select(Conversation)).one()
        assert conversation.handoff_task == "Task/t1" and conversation.handoff_until is not None


async def test_an_unreachable_ehr_is_retried_then_fails_visibly(engine: Engine) -> None:
    writer = FakeWriter(confirm=FhirUnavailableError("EHR down", operation="read", resource_type="Appointment"))
    actions = runner(engine, writer)
    request_id = request(engine, "confirm")
    assert await actions.run_once() == 1
    assert await actions.run_once() == 0  # waiting out its backoff
    for _ in range(MAX_ATTEMPTS - 1):
        with transaction(engine) as session:  # time passes
            row = session.get(ActionRequest, request_id)
            assert row is not None and row.state == "pending"
            row.next_attempt_at = utcnow()
            session.add(row)
        await actions.run_once()
    with Session(engine) as session:
        row = session.get(ActionRequest, request_id)
        assert row is not None and (row.state, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert [a.kind for a in open_alerts(engine)] == ["action_failed"]
    assert replies(engine) == [Texts.load().text("handoff", "en_US", "en_US")[0]]  # the clinic will call


async def test_each_outcome_is_answered_once(engine: Engine) -> None:
    actions = runner(engine, FakeWriter())
    request(engine, "confirm")
    assert await actions.run_once() == 1
    assert await actions.run_once() == 0
    assert replies(engine) == [Texts.load().text("confirmed", "en_US", "en_US")[0]]
