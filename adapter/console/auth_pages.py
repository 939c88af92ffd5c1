"""The console's login, logout and home pages (45 CFR 164.312(d) person or entity authentication).

A user pastes an API key; :func:`adapter.security.credentials.login` (the API's, with its failed-login
throttle and audit) opens a session whose token goes into the console cookie only. The login form is
protected against login CSRF by a double-submit nonce: a random cookie scoped to the login page, and
the form's field an HMAC of it (OWASP CSRF cheat sheet, "login CSRF"). A key whose role has no
console pages (``integration``) opens no session. Logging out ends the session in the database.
"""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError

from adapter.console.web import (
    CONSOLE_ROLES,
    COOKIE,
    LOGIN_PATH,
    PAGE_HEADERS,
    PATH,
    Console,
    NavEntry,
    session_cookie,
)
from adapter.security.access import source_of
from adapter.security.credentials import AuthenticationError, LoginThrottled, login, logout
from adapter.security.roles import Principal

NAV: list[NavEntry] = []  # the home page redirects to the role's first page; logout is in base.html
LOGIN_COOKIE = "bridge_console_login"
MAX_KEY_CHARS = 200  # keys are 43 characters; anything longer is not one (and is not hashed at length)


def _login_page(console: Console, request: Request, status: int = 200, message: str | None = None,
                headers: dict[str, str] | None = None) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    response = console.render_public(request, "login.html", status, message=message,
                                     expired=request.query_params.get("expired") == "1",
                                     idle_minutes=console.session_minutes,
                                     csrf_token=console.csrf_token(nonce, "login"))
    response.set_cookie(LOGIN_COOKIE, nonce, path=LOGIN_PATH, secure=True, httponly=True, samesite="strict")
    response.headers.update(headers or {})
    return response


def router(console: Console) -> APIRouter:
    router = APIRouter(prefix=PATH, include_in_schema=False)
    anyone = console.require(*CONSOLE_ROLES)

    @router.get("/login")
    async def get_login(request: Request) -> Response:
        return _login_page(console, request)

    @router.post("/login")
    async def post_login(request: Request) -> Response:
        fields = await console.read_form(request)
        if not console.csrf_ok(fields.get("csrf_token", ""), request.cookies.get(LOGIN_COOKIE), "login"):
            return _login_page(console, request, 403, "The login form had expired. Paste the key again.")
        key = fields.get("key", "").strip()[:MAX_KEY_CHARS]
        try:
            result = await asyncio.to_thread(login, console.engine, key, source_of(request),
                                             minutes=console.session_minutes, throttle=console.throttle)
        except LoginThrottled as throttled:
            return _login_page(console, request, 429, "Too many failed logins from this address. "
                               f"Try again in {throttled.retry_after} seconds.",
                               {"Retry-After": str(throttled.retry_after)})
        except AuthenticationError:
            return _login_page(console, request, 401, "That API key is not valid.")
        except OperationalError:  # the database cannot be reached: nothing was decided
            return _login_page(console, request, 503, "Logging in is not possible right now; try again shortly.",
                               {"Retry-After": "5"})
        if result.role not in CONSOLE_ROLES:  # a system key: no console session at all
            await asyncio.to_thread(logout, console.engine, result.token, source_of(request))
            return _login_page(console, request, 403, "This key's role has no console pages.")
        old = request.cookies.get(COOKIE)
        if old:  # one browser, one session: the one it replaces ends now
            await asyncio.to_thread(logout, console.engine, old, source_of(request))
        response = RedirectResponse(f"{PATH}/", status_code=303, headers=PAGE_HEADERS)
        session_cookie(response, result.token)
        response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH, secure=True, httponly=True, samesite="strict")
        return response

    @router.get("/")
    async def home(request: Request, principal: Principal = Depends(anyone)) -> Response:
        pages = console.nav(principal)
        if pages:
            return RedirectResponse(pages[0][1], status_code=303, headers=PAGE_HEADERS)
        return console.render(request, principal, "error.html", status=200, title="Console",
                              message="There are no pages for your role yet.")

    @router.post("/logout")
    async def post_logout(request: Request, principal: Principal = Depends(anyone)) -> Response:
        await console.form(request, principal)
        await asyncio.to_thread(logout, console.engine, request.cookies.get(COOKIE, ""), source_of(request))
        response = RedirectResponse(LOGIN_PATH, status_code=303, headers=PAGE_HEADERS)
        response.delete_cookie(COOKIE, path=PATH, secure=True, httponly=True, samesite="strict")
        return response

    return router
