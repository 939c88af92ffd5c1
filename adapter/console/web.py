"""The browser console's foundation: cookie sessions over the API's sessions and roles, CSRF tokens,
security headers and page rendering; every pages module builds on :class:`Console`.

- Sessions are the API's (:func:`adapter.security.credentials.login`), their token in a cookie
  ``Secure; HttpOnly; SameSite=Strict; Path=/console`` (OWASP ASVS 3.4.1-3.4.5), ended after
  ``api_session_minutes`` without a page view (45 CFR 164.312(a)(2)(iii) automatic logoff) and after
  :data:`MAX_SESSION` in any case.
- Every POST carries a CSRF token: HMAC-SHA256 of the session token under a server key (the OWASP
  "synchronizer token" bound to the session, compared in constant time); a cross-site
  ``Sec-Fetch-Site`` is refused too. A refusal is a 403 and a security alert in the audit trail.
- Every response gets a strict Content-Security-Policy (CSP Level 3: ``default-src 'self'``, no inline
  script or style, ``frame-ancestors 'none'``, ``form-action 'self'``), ``nosniff``, ``no-referrer``;
  pages ``Cache-Control: no-store``.
- Every page view is audited (action R, the route's template: never an id or PHI; 45 CFR 164.312(b)),
  a refusal as the API's are (:mod:`adapter.security.access`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.http.json_body import BodyError, read_capped
from adapter.security.access import route_template, source_of, touch_session
from adapter.security.credentials import AuthenticationError
from adapter.security.refusal_budget import RefusalBudget, audit_entries
from adapter.security.roles import Principal, Role
from adapter.storage.db import transaction

COOKIE = "bridge_console"
PATH = "/console"
LOGIN_PATH = "/console/login"
MAX_SESSION = timedelta(hours=12)  # a session in constant use still ends within a working day
MAX_FORM_BYTES = 16 * 1024  # the largest console form is a search: a few hundred bytes
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin"}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
CONSOLE_ROLES = (Role.AUDITOR, Role.PRIVACY_OFFICER, Role.OPERATOR, Role.ADMIN)

NavEntry = tuple[str, str, frozenset[Role]]  # (label, path, roles that see it)


class ConsoleResponse(Exception):
    """Answers the request with ``response`` at once (raised from a dependency or handler; the
    exception handler :func:`adapter.console.routes.install_console` installs returns it)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ConsoleRedirect(ConsoleResponse):
    """No live session: 303 to the login page (``expired=1`` says why, no other parameter)."""

    def __init__(self, location: str = LOGIN_PATH) -> None:
        super().__init__(RedirectResponse(location, status_code=303, headers=PAGE_HEADERS))


def secure(response: Response, *, page: bool = True) -> Response:
    """Adds the security headers (and ``no-store`` to a page) to any console response."""
    response.headers.update(PAGE_HEADERS if page else SECURITY_HEADERS)
    return response


def session_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, path=PATH, secure=True, httponly=True, samesite="strict")


class Console:
    """What every pages module gets: the database, the templates, the session dependency and the
    renderer. ``settings``, ``service``, ``signer`` and ``directory`` are the running service's parts
    (None where a caller has none, e.g. no signing key: the page that needs one says so)."""

    def __init__(self, engine: Engine, *, session_minutes: int, csrf_key: bytes, settings: Any = None,
                 service: Any = None, signer: Any = None, directory: Any = None, throttle: Any = None) -> None:
        self.engine = engine
        self.settings, self.service, self.signer, self.directory = settings, service, signer, directory
        self.throttle = throttle
        self.session_minutes = session_minutes
        self.idle = timedelta(minutes=session_minutes)
        # A key of its own, derived from the caller's secret: CSRF tokens reveal nothing about it.
        self._csrf_key = hmac.new(csrf_key, b"bridge-console-csrf-v1", hashlib.sha256).digest()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("adapter.console", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            trim_blocks=True, lstrip_blocks=True)
        self.nav_entries: list[NavEntry] = []
        self._budget = RefusalBudget()  # anonymous refusals (forged cookies) stay bounded in the trail

    # -- CSRF ---------------------------------------------------------------------------------
    def csrf_token(self, session_token: str, purpose: str = "session") -> str:
        mac = hmac.new(self._csrf_key, f"{purpose}\x00{session_token}".encode(), hashlib.sha256)
        return mac.hexdigest()

    def csrf_ok(self, sent: str, session_token: str | None, purpose: str = "session") -> bool:
        if not session_token or not sent:
            return False
        return hmac.compare_digest(sent.encode(), self.csrf_token(session_token, purpose).encode())

    # -- sessions -----------------------------------------------------------------------------
    def require(self, *roles: Role) -> Callable[[Request], Awaitable[Principal]]:
        """FastAPI dependency: the page's principal, its view audited; 303 to the login page without
        a live session, a 403 page (audited) for a role not in ``roles``."""
        allowed = frozenset(roles)

        async def dependency(request: Request) -> Principal:
            token = request.cookies.get(COOKIE)
            if not token:
                raise ConsoleRedirect()
            path, source = route_template(request), source_of(request)
            try:
                principal, admitted = await asyncio.to_thread(self._open, token, allowed, path, source)
            except AuthenticationError as error:
                await asyncio.to_thread(self._record_anonymous, source, path, error.reason)
                redirect = ConsoleRedirect(f"{LOGIN_PATH}?expired=1" if error.reason == "expired" else LOGIN_PATH)
                redirect.response.delete_cookie(COOKIE, path=PATH, secure=True, httponly=True, samesite="strict")
                raise redirect from None
            if not admitted:
                raise ConsoleResponse(self.error_page(request, 403, "Not for your role",
                                                      "Your role may not use this page.", principal))
            return principal

        return dependency

    def _open(self, token: str, allowed: frozenset[Role], path: str, source: str | None) -> tuple[Principal, bool]:
        with transaction(self.engine) as session:
            principal = touch_session(session, token, idle=self.idle, max_age=MAX_SESSION)
            admitted = principal.role in allowed
            if admitted:
                kind = Kind.AUDIT_ACCESS if path.startswith(f"{PATH}/audit") else Kind.ADMIN
                record(session, AuditEntry(kind, Action.READ, agent=principal.agent, agent_role=principal.role.value,
                                           source=source, detail={"op": "page-view", "path": path}))
            else:  # as the API's refusals: a security alert, outcome 4, reason "role"
                record(session, AuditEntry(Kind.SECURITY_ALERT, Action.EXECUTE, Outcome.MINOR_FAILURE,
                                           agent=principal.agent, agent_role=principal.role.value, source=source,
                                           detail={"reason": "role", "path": path}))
            return principal, admitted

    def _record_anonymous(self, source: str | None, path: str, reason: str) -> None:
        # An idle session running out is routine (minor); a cookie naming no live session is not.
        outcome = Outcome.MINOR_FAILURE if reason == "expired" else Outcome.SERIOUS_FAILURE
        refusal = AuditEntry(Kind.SECURITY_ALERT, Action.EXECUTE, outcome, agent="unknown", source=source,
                             detail={"reason": reason, "path": path})
        entries = audit_entries(self._budget.admit(source, reason), refusal)
        if entries:
            with transaction(self.engine) as session:
                record(session, *entries)

    def record(self, *entries: AuditEntry) -> None:
        """Records audit entries in a transaction of their own (call from a worker thread)."""
        with transaction(self.engine) as session:
            record(session, *entries)

    # -- forms --------------------------------------------------------------------------------
    async def form(self, request: Request, principal: Principal) -> dict[str, str]:
        """The POSTed urlencoded form, its ``csrf_token`` checked against the session (removed from
        the result); a 403 page, audited as a security alert, when it is missing or wrong."""
        token = request.cookies.get(COOKIE)
        fields = await self.read_form(request, principal)
        sent = fields.pop("csrf_token", "")
        cross_site = request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")
        if cross_site or not self.csrf_ok(sent, token):
            reason = "cross-site" if cross_site else "csrf-missing" if not sent else "csrf-wrong"
            await asyncio.to_thread(self.record, AuditEntry(
                Kind.SECURITY_ALERT, Action.EXECUTE, Outcome.SERIOUS_FAILURE, agent=principal.agent,
                agent_role=principal.role.value, source=source_of(request),
                detail={"reason": reason, "path": route_template(request)}))
            raise ConsoleResponse(self.error_page(request, 403, "Form refused",
                                                  "This form was not sent from this console page. "
                                                  "Go back, reload the page and try again.", principal))
        return fields

    async def read_form(self, request: Request, principal: Principal | None = None) -> dict[str, str]:
        """A urlencoded body of at most :data:`MAX_FORM_BYTES` as a dict (the last of repeated names)."""
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise ConsoleResponse(self.error_page(request, 415, "Not a form", "Send the page's form.", principal))
        try:
            raw = await read_capped(request, MAX_FORM_BYTES)
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
        except (BodyError, UnicodeDecodeError, ValueError):
            raise ConsoleResponse(self.error_page(request, 400, "Form not readable",
                                                  "The form was too large or malformed.", principal)) from None
        return {name: value for name, value in pairs if "\x00" not in value}

    # -- rendering ----------------------------------------------------------------------------
    def nav(self, principal: Principal | None) -> list[tuple[str, str]]:
        if principal is None:
            return []
        return [(label, path) for label, path, roles in self.nav_entries if principal.role in roles]

    def render(self, request: Request, principal: Principal, template: str, status_code: int = 200,
               **context: Any) -> HTMLResponse:
        """A page from ``template`` (which extends ``base.html``) with ``csrf_token``, ``principal``,
        ``nav`` and ``request`` in its context, and the security headers."""
        token = request.cookies.get(COOKIE)
        html = self.templates.get_template(template).render(
            request=request, principal=principal, nav=self.nav(principal),
            csrf_token=self.csrf_token(token) if token else "", **context)
        return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)

    def render_public(self, request: Request, template: str, status_code: int = 200,
                      **context: Any) -> HTMLResponse:
        """A page without a session (the login page): no nav, no principal."""
        context.setdefault("csrf_token", "")
        html = self.templates.get_template(template).render(request=request, principal=None, nav=[], **context)
        return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)

    def error_page(self, request: Request, status: int, title: str, message: str,
                   principal: Principal | None = None) -> HTMLResponse:
        context: Mapping[str, Any] = {"status": status, "title": title, "message": message}
        if principal is None:
            return self.render_public(request, "error.html", status, **context)
        return self.render(request, principal, "error.html", status, **context)

    def add_nav(self, entries: Iterable[NavEntry]) -> None:
        self.nav_entries.extend(entries)
