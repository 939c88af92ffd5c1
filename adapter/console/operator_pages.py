"""The operator pages of the console (README, "Console"): the service at a glance (queues and their ages,
sending paused or not), sending resume and pause, operator alerts with ack, dead letters with retry; and,
through :mod:`adapter.console.operator_setup_pages`, skips, templates, feeds, hand-offs, consent and replay.

Reads are those of ``/health`` (:func:`adapter.http.health.health`) and ``/metrics`` (one queue statement),
so the console, the probes and the dashboards show one truth. Every change posts a form with the CSRF token
(:meth:`adapter.console.web.Console.form`), asks for confirmation first, and is audited with the principal
(:mod:`adapter.console.operator_actions`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from adapter.console import operator_hl7_pages, operator_setup_pages
from adapter.console.operator_actions import ack_alert, pause, resume, retry_dead_letter
from adapter.console.operator_common import (
    ADMINS,
    OPERATORS,
    actor,
    age,
    confirm_page,
    confirmed,
    int_field,
    is_admin,
    service_of,
    when,
)
from adapter.console.operator_queries import held_by_pause, queue_ages
from adapter.console.web import Console
from adapter.http.health import health
from adapter.ops.alerts import open_alerts
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.dead_letters import dead_letters
from adapter.security.roles import Principal, Role

_OPS = frozenset(OPERATORS)
NAV: list[tuple[str, str, frozenset[Role]]] = [
    ("Operations", "/console/operator", _OPS),
    ("Alerts", "/console/operator/alerts", _OPS),
    ("Dead letters", "/console/operator/dead-letters", _OPS),
    *operator_hl7_pages.NAV,
    *operator_setup_pages.NAV,
]
_ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]{1,300}")  # stored and logged text (adapter.http.json_body.ONE_LINE)


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix="/console/operator")
    operators, admins = console.require(*OPERATORS), console.require(*ADMINS)

    async def overview(request: Request, principal: Principal, notice: str | None = None,
                       error: str | None = None) -> HTMLResponse:
        service = service_of(console)
        report, queues, held = await asyncio.gather(asyncio.to_thread(health, service),
                                                    asyncio.to_thread(queue_ages, service.engine),
                                                    asyncio.to_thread(held_by_pause, service.engine))
        return console.render(request, principal, "operator/overview.html", report=report, held=held,
                              queues=[(q, age(q.oldest_seconds)) for q in queues],
                              paused_since=_since(report), is_admin=is_admin(principal),
                              notice=notice, error=error)

    @pages.get("", response_class=HTMLResponse)
    async def get_overview(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return await overview(request, principal)

    async def resume_confirm(request: Request, principal: Principal) -> HTMLResponse:
        paused = await asyncio.to_thread(sending_paused, console.engine)
        held = await asyncio.to_thread(held_by_pause, console.engine)
        return confirm_page(
            console, request, principal, title="Resume sending", action="/console/operator/sending/resume",
            what=(f"Sending has been paused since {when(paused.set_at)}: {paused.reason}. {held} message(s) "
                  "held by the pause will go at once." if paused else "Sending is not paused."),
            warning="Resuming sends every message the pause held at once. Fix the cause first (the access "
                    "token, the account's standing or payment), or the next send pauses it again.",
            fields={}, button="Resume sending", back="/console/operator")

    @pages.get("/sending/resume", response_class=HTMLResponse)
    async def get_resume(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return await resume_confirm(request, principal)

    @pages.post("/sending/resume", response_class=HTMLResponse)
    async def post_resume(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        form = await console.form(request, principal)
        service = service_of(console)
        if not confirmed(form):
            return await resume_confirm(request, principal)
        changed = await asyncio.to_thread(resume, service, actor(request, principal))
        return await overview(request, principal, notice="Sending resumed: held messages go now." if changed
                              else "Sending was not paused; nothing changed.")

    @pages.post("/sending/pause", response_class=HTMLResponse)
    async def post_pause(request: Request, principal: Principal = Depends(admins)) -> HTMLResponse:
        form = await console.form(request, principal)
        reason = form.get("reason", "").strip()
        if not _ONE_LINE.fullmatch(reason):
            return await overview(request, principal, error="Give a reason for the pause (one line, at most "
                                  "300 characters).")
        if not confirmed(form):
            return confirm_page(console, request, principal, title="Pause sending",
                                action="/console/operator/sending/pause", fields={"reason": reason},
                                what=f"Pause all sending, with the reason: {reason}",
                                warning="No message goes to any patient until someone resumes sending.",
                                button="Pause sending", back="/console/operator")
        changed = await asyncio.to_thread(pause, console.engine, actor(request, principal), reason)
        return await overview(request, principal, notice="Sending paused." if changed else "Sending was paused "
                              "already; nothing changed.")

    async def alerts_page(request: Request, principal: Principal, notice: str | None = None,
                          error: str | None = None) -> HTMLResponse:
        rows = await asyncio.to_thread(open_alerts, console.engine)
        return console.render(request, principal, "operator/alerts.html", notice=notice, error=error,
                              alerts=[(row, when(row.created_at)) for row in rows])

    @pages.get("/alerts", response_class=HTMLResponse)
    async def get_alerts(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return await alerts_page(request, principal)

    @pages.post("/alerts/ack", response_class=HTMLResponse)
    async def post_ack(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        form = await console.form(request, principal)
        alert_id = int_field(form, "alert_id")
        if alert_id is None:
            return await alerts_page(request, principal, error="No such alert.")
        if not confirmed(form):
            return confirm_page(console, request, principal, title="Acknowledge alert",
                                action="/console/operator/alerts/ack", fields={"alert_id": str(alert_id)},
                                what=f"Acknowledge alert {alert_id}: it leaves the open alerts (and /health's "
                                     "count). If the cause happens again, it is raised anew.",
                                button="Acknowledge", back="/console/operator/alerts")
        done = await asyncio.to_thread(ack_alert, console.engine, actor(request, principal), alert_id)
        return await alerts_page(request, principal, notice=f"Alert {alert_id} acknowledged." if done else None,
                                 error=None if done else f"No open alert {alert_id}.")

    async def dead_page(request: Request, principal: Principal, notice: str | None = None,
                        error: str | None = None) -> HTMLResponse:
        rows = await asyncio.to_thread(dead_letters, console.engine)
        return console.render(request, principal, "operator/dead_letters.html", notice=notice, error=error,
                              letters=[(row, when(row.updated_at)) for row in rows])

    @pages.get("/dead-letters", response_class=HTMLResponse)
    async def get_dead(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return await dead_page(request, principal)

    @pages.post("/dead-letters/retry", response_class=HTMLResponse)
    async def post_retry(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        form = await console.form(request, principal)
        outbox_id = int_field(form, "outbox_id")
        if outbox_id is None:
            return await dead_page(request, principal, error="No such dead letter.")
        if not confirmed(form):
            return confirm_page(console, request, principal, title="Retry dead letter",
                                action="/console/operator/dead-letters/retry", fields={"outbox_id": str(outbox_id)},
                                what=f"Queue message {outbox_id} again: it is sent at once, as a new attempt.",
                                warning="If the cause is not fixed (a refused template, a number not on "
                                        "WhatsApp), it comes back here.",
                                button="Retry", back="/console/operator/dead-letters")
        queued, said = await asyncio.to_thread(retry_dead_letter, service_of(console), actor(request, principal),
                                               outbox_id)
        return await dead_page(request, principal, notice=said if queued else None, error=None if queued else said)

    pages.include_router(operator_setup_pages.router(console))
    pages.include_router(operator_hl7_pages.router(console))
    return pages


def _since(report: dict[str, Any]) -> str:
    since = report.get("sending_paused_since")
    return f"{since[:16].replace('T', ' ')} UTC" if since else ""
