"""The operator pages about what the service was set up with and what it did not send (README, "Console"):
skips counted by rule and reason; templates and their review states, with sync (admin); EHR subscriptions
and feed health; open hand-offs with their FHIR Task; the front desk (questions that found no approved answer,
per language and day, and the answers served with their feedback, counts only); a patient's consent, looked
up by reference; replay of a resource (admin).

Mounted by :func:`adapter.console.operator_pages.router` under ``/console/operator``. The consent lookup
is a POST form (no patient reference in a URL) and is audited with the patient; no phone number is shown,
only how many are on file.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from adapter.audit.trail import Action
from adapter.console.operator_actions import PATIENT_REFERENCE, REFERENCE, ReplayError, audit, replay, sync_templates
from adapter.console.operator_common import (
    ADMINS,
    OPERATORS,
    actor,
    confirm_page,
    confirmed,
    is_admin,
    service_of,
    when,
)
from adapter.console.operator_queries import (
    consent_of,
    front_desk_report,
    open_handoffs,
    skip_counts,
    template_states,
)
from adapter.console.web import Console
from adapter.feeds.tasks import feeds_health
from adapter.security.roles import Principal, Role
from whatsapp.errors import WhatsAppError

_OPS, _ADMINS = frozenset(OPERATORS), frozenset(ADMINS)
NAV: list[tuple[str, str, frozenset[Role]]] = [
    ("Skips", "/console/operator/skips", _OPS),
    ("Templates", "/console/operator/templates", _OPS),
    ("Feeds", "/console/operator/feeds", _OPS),
    ("Hand-offs", "/console/operator/handoffs", _OPS),
    ("Front desk", "/console/operator/front-desk", _OPS),
    ("Consent", "/console/operator/consent", _OPS),
    ("Replay", "/console/operator/replay", _ADMINS),
]


def router(console: Console) -> APIRouter:
    """Routes relative to ``/console/operator`` (the prefix of the router that includes this one)."""
    pages = APIRouter()
    operators, admins = console.require(*OPERATORS), console.require(*ADMINS)

    @pages.get("/skips", response_class=HTMLResponse)
    async def get_skips(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        rows = await asyncio.to_thread(skip_counts, console.engine)
        return console.render(request, principal, "operator/skips.html",
                              skips=[(row, when(row.last_at)) for row in rows])

    async def templates_page(request: Request, principal: Principal, report: object = None,
                             error: str | None = None) -> HTMLResponse:
        service = service_of(console)
        rows = await asyncio.to_thread(template_states, service.engine)
        return console.render(request, principal, "operator/templates.html", report=report, error=error,
                              states=[(row, when(row.updated_at)) for row in rows],
                              sync_error=service.template_sync_error, is_admin=is_admin(principal))

    @pages.get("/templates", response_class=HTMLResponse)
    async def get_templates(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return await templates_page(request, principal)

    @pages.post("/templates/sync", response_class=HTMLResponse)
    async def post_sync(request: Request, principal: Principal = Depends(admins)) -> HTMLResponse:
        form = await console.form(request, principal)
        if not confirmed(form):
            return confirm_page(console, request, principal, title="Sync templates",
                                action="/console/operator/templates/sync", fields={},
                                what="Create the project's templates that the WhatsApp Business Account lacks "
                                     "(Meta then reviews them) and record every template's review state.",
                                button="Sync templates", back="/console/operator/templates")
        try:
            report = await sync_templates(service_of(console), actor(request, principal))
        except WhatsAppError as error:
            return await templates_page(request, principal, error=f"The WhatsApp Business Account could not be "
                                        f"reached ({type(error).__name__}).")
        return await templates_page(request, principal, report=report)

    @pages.get("/feeds", response_class=HTMLResponse)
    async def get_feeds(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        service = service_of(console)
        feeds = await asyncio.to_thread(feeds_health, service.settings, service.engine)
        return console.render(request, principal, "operator/feeds.html", feeds=feeds,
                              subscriptions=service.subscriptions, subscription_error=service.subscription_error,
                              feed_mode=service.settings.feed_mode)

    @pages.get("/handoffs", response_class=HTMLResponse)
    async def get_handoffs(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        rows = await asyncio.to_thread(open_handoffs, console.engine)
        return console.render(request, principal, "operator/handoffs.html",
                              handoffs=[(row, when(row.since), when(row.until)) for row in rows])

    @pages.get("/front-desk", response_class=HTMLResponse)
    async def get_front_desk(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        report = await asyncio.to_thread(front_desk_report, console.engine)
        return console.render(request, principal, "operator/front_desk.html", report=report)

    @pages.get("/consent", response_class=HTMLResponse)
    async def get_consent(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        return console.render(request, principal, "operator/consent.html", found=None, error=None, patient="")

    @pages.post("/consent", response_class=HTMLResponse)
    async def post_consent(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        form = await console.form(request, principal)
        patient = form.get("patient", "").strip()
        if not PATIENT_REFERENCE.fullmatch(patient):
            return console.render(request, principal, "operator/consent.html", found=None, patient="",
                                  error="Give a patient's FHIR reference, such as Patient/123.", status_code=422)
        service = service_of(console)
        found = await asyncio.to_thread(consent_of, service.engine, patient)
        # Whose consent was looked at, by whom: a read about a patient, audited with the patient.
        await asyncio.to_thread(audit, service.engine, actor(request, principal), Action.READ, "consent-lookup",
                                entity="consent", patient=patient)
        return console.render(request, principal, "operator/consent.html", found=found, patient=patient,
                              changed=when(found.changed_at), error=None)

    def replay_form(request: Request, principal: Principal, decision: object = None, error: str | None = None,
                    reference: str = "", status_code: int = 200) -> HTMLResponse:
        return console.render(request, principal, "operator/replay.html", decision=decision, error=error,
                              reference=reference, status_code=status_code)

    @pages.get("/replay", response_class=HTMLResponse)
    async def get_replay(request: Request, principal: Principal = Depends(admins)) -> HTMLResponse:
        return replay_form(request, principal)

    @pages.post("/replay", response_class=HTMLResponse)
    async def post_replay(request: Request, principal: Principal = Depends(admins)) -> HTMLResponse:
        form = await console.form(request, principal)
        reference = form.get("reference", "").strip()
        if not REFERENCE.fullmatch(reference):
            return replay_form(request, principal, error="Give a reference such as Appointment/123.",
                               status_code=422)
        if not confirmed(form):
            return confirm_page(console, request, principal, title="Replay a resource",
                                action="/console/operator/replay", fields={"reference": reference},
                                what=f"Read {reference} from the EHR again and decide it anew, as if it had "
                                     "just changed.",
                                warning="Messages already sent for it are not sent again.",
                                button="Replay", back="/console/operator/replay")
        try:
            decision = await replay(service_of(console), actor(request, principal), reference)
        except ReplayError as error:
            return replay_form(request, principal, error=str(error), reference=reference)
        return replay_form(request, principal, decision=decision, reference=reference)

    return pages
