"""The operators' "HL7 dead letters" page (README, "Console"; DESIGN.md, "Nothing is dropped silently"): the
stored HL7 v2 messages that could not be processed, as ``bridge hl7 dead list`` shows them, and their retry,
as ``bridge hl7 dead retry`` makes it (:mod:`adapter.hl7.dead`, the one implementation of both).

Mounted by :func:`adapter.console.operator_pages.router` under ``/console/operator``. The page shows
identifiers only (id, facility, type^trigger, MSH-10, when received, the error class, attempts), never the
message's text or anything about its patient: each row is copied into :class:`DeadHl7` first, so the
template cannot reach the stored (encrypted) text. A retry posts the CSRF token, asks for confirmation, and
is audited as the console's other changes are (:func:`adapter.console.operator_actions.audit`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.engine import Engine

from adapter.audit.trail import Action, Outcome
from adapter.console.operator_actions import MAX_ROW_ID, Actor, audit
from adapter.console.operator_common import OPERATORS, actor, confirm_page, confirmed, int_field, when
from adapter.console.web import Console
from adapter.hl7.dead import dead_messages, redrive
from adapter.security.roles import Principal, Role

PATH = "/console/operator/hl7-dead"
NAV: list[tuple[str, str, frozenset[Role]]] = [("HL7 dead letters", PATH, frozenset(OPERATORS))]
QUEUED = "queued again"  # the end of adapter.hl7.dead.redrive's answer when it queued the message


@dataclass(frozen=True)
class DeadHl7:
    """What the page shows of one dead message: identifiers and why, no content."""

    id: int
    facility: str
    kind: str  # message type ^ trigger event, e.g. SIU^S12
    control_id: str  # MSH-10
    received: str
    error: str
    attempts: int
    retriable: bool  # False once retention removed the text: the sender must send it again


def dead_hl7(engine: Engine) -> list[DeadHl7]:
    rows = dead_messages(engine)
    return [DeadHl7(row.id or 0, row.facility, f"{row.message_type}^{row.trigger}", row.control_id,
                    when(row.received_at), row.last_error or "-", row.attempts, bool(row.raw_enc)) for row in rows]


def retry_hl7(engine: Engine, who: Actor, message_id: int) -> tuple[bool, str]:
    """Queues a dead HL7 message again through :func:`adapter.hl7.dead.redrive` (which closes its alert and
    writes the domain's audit entry, naming the principal); the console's entry records the attempt and its
    outcome, refused ones included. Returns (queued, what happened in words)."""
    if 1 <= message_id <= MAX_ROW_ID:
        said = redrive(engine, message_id, agent=who.principal.agent)
    else:
        said = f"no HL7 message {message_id}"
    queued = said.endswith(QUEUED)
    audit(engine, who, Action.UPDATE, "hl7-dead-retry", entity=f"hl7_message/{message_id}",
          outcome=Outcome.SUCCESS if queued else Outcome.MINOR_FAILURE)
    return queued, said


def router(console: Console) -> APIRouter:
    """Routes relative to ``/console/operator`` (the prefix of the router that includes this one)."""
    pages = APIRouter()
    operators = console.require(*OPERATORS)

    async def dead_page(request: Request, principal: Principal, notice: str | None = None,
                        error: str | None = None) -> HTMLResponse:
        rows = await asyncio.to_thread(dead_hl7, console.engine)
        return console.render(request, principal, "operator/hl7_dead.html", messages=rows, notice=notice,
                              error=error)

    @pages.get("/hl7-dead", response_class=HTMLResponse)
    async def get_dead(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return await dead_page(request, principal)

    @pages.post("/hl7-dead/retry", response_class=HTMLResponse)
    async def post_retry(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        form = await console.form(request, principal)
        message_id = int_field(form, "message_id")
        if message_id is None:
            return await dead_page(request, principal, error="No such HL7 message.")
        if not confirmed(form):
            return confirm_page(console, request, principal, title="Retry HL7 message",
                                action=f"{PATH}/retry", fields={"message_id": str(message_id)},
                                what=f"Queue HL7 message {message_id} again: it is processed anew, from its "
                                     "first attempt, and its alert is closed.",
                                warning="Fix the cause first (the facility's field positions, the data key), "
                                        "or it comes back here.",
                                button="Retry", back=PATH)
        queued, said = await asyncio.to_thread(retry_hl7, console.engine, actor(request, principal), message_id)
        said = said[:1].upper() + said[1:] + "."
        return await dead_page(request, principal, notice=said if queued else None, error=None if queued else said)

    return pages
