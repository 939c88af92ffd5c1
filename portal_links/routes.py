"""The link endpoints a patient's tap lands on.

``GET``/``HEAD`` change nothing: WhatsApp and mail scanners fetch links for previews, so a GET
only serves a neutral page with a button. The patient's click (``POST``) redeems the link and
answers ``303`` to the portal, which always asks the patient to log in. Every page is the same
neutral page whatever the token's state, with no PHI and no third-party assets.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from .guard import ProbeGuard
from .store import PORTAL_PATHS, LinkOutcome, LinkStore

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex,nofollow"><meta property="og:title" content="Patient portal">
<meta property="og:description" content="Log in to your patient portal."><title>Patient portal</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
button{{font-size:1.1rem;padding:.7rem 1.4rem}}</style></head><body>
<h1>Patient portal</h1><p>{text}</p>{form}</body></html>"""

_OPEN_FORM = '<form method="post"><button type="submit">Continue to the portal</button></form>'
_LIVE_TEXT = "Continue to your hospital's patient portal. You will be asked to log in."
_DEAD_TEXT = ("This link can no longer be used. To get a fresh link, send us a message on WhatsApp "
              "and ask for a new link.")


def _page(text: str, form: str = "", status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(text=text, form=form), status_code=status, headers=_HEADERS)


def _client(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def build_link_router(store: LinkStore, engine: Engine, portal_base_url: str,
                      on_outcome: Callable[[LinkOutcome], None] | None = None, *,
                      guard: ProbeGuard | None = None,
                      assertion: Callable[[str], str] | None = None) -> APIRouter:
    """``guard``: the probe rate limit (default: 20 bad tokens per address per minute, in memory).
    ``assertion``: the optional hand-off — given the link's patient reference, a short-lived signed
    assertion for the portal, put in the redirect's fragment (``#assertion=…``): a fragment never
    reaches a server log or a ``Referer``, and the portal's page reads it and verifies it."""
    router = APIRouter(include_in_schema=False)
    probes = guard if guard is not None else ProbeGuard()

    @router.api_route("/l/{token}", methods=["GET", "HEAD"])
    async def show(token: str, request: Request) -> Response:
        # Neutral and identical for every token state: a preview bot learns nothing, changes nothing.
        client, user_agent = _client(request), request.headers.get("user-agent")
        if probes.blocked(client):
            await run_in_threadpool(store.record_rate_limited, engine, client=client, user_agent=user_agent,
                                    method=request.method)
            return _page(_DEAD_TEXT, status=429)
        outcome = await run_in_threadpool(store.preview, engine, token, client=client, user_agent=user_agent,
                                          method=request.method)
        probes.note(client, outcome.value)
        return _page(_LIVE_TEXT, _OPEN_FORM)

    @router.post("/l/{token}")
    async def open_link(token: str, request: Request) -> Response:
        client, user_agent = _client(request), request.headers.get("user-agent")
        if probes.blocked(client):
            await run_in_threadpool(store.record_rate_limited, engine, client=client, user_agent=user_agent,
                                    method="POST")
            if on_outcome is not None:
                on_outcome(LinkOutcome.RATE_LIMITED)
            return _page(_DEAD_TEXT, status=429)
        redemption = await run_in_threadpool(store.redeem, engine, token, client=client, user_agent=user_agent)
        probes.note(client, redemption.outcome.value)
        if on_outcome is not None:
            on_outcome(redemption.outcome)
        if redemption.outcome is LinkOutcome.OPENED and redemption.target is not None:
            location = portal_base_url.rstrip("/") + PORTAL_PATHS[redemption.target]
            if assertion is not None and redemption.patient_ref:
                location += "#assertion=" + assertion(redemption.patient_ref)
            return RedirectResponse(location, status_code=303, headers=_HEADERS)
        # One answer for expired, revoked, exhausted, unknown and forged: nothing to learn by probing.
        return _page(_DEAD_TEXT, status=410)

    return router
