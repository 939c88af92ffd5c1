"""Mounts the browser console under ``/console``: every pages module's ``router(console)``, their nav
entries, the static files (CSS and JS shipped in the package: no CDN, hospitals run air-gapped), and
the exception handler that turns :class:`adapter.console.web.ConsoleResponse` into its page.

Pages modules plug in by being in :data:`PAGE_MODULES`; one that is not installed is skipped, so the
console grows module by module.
"""

from __future__ import annotations

import importlib
import re
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from adapter.console.web import PATH, SECURITY_HEADERS, Console, ConsoleResponse
from adapter.security.login_throttle import LoginThrottle

PAGE_MODULES = ("adapter.console.auth_pages", "adapter.console.audit_pages", "adapter.console.audit_tools",
                "adapter.console.operator_pages", "adapter.console.chart_pages")
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,60}\.(css|js|svg)$")
_MEDIA_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}


def _pages_modules() -> list[Any]:
    found = []
    for name in PAGE_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name != name:  # the module exists but something it imports is missing: a real error
                raise
    return found


def _static_router() -> APIRouter:
    router = APIRouter(prefix=f"{PATH}/static", include_in_schema=False)
    folder = resources.files("adapter.console") / "static"

    @router.get("/{name}")
    async def static_file(name: str) -> Response:
        match = _STATIC_NAME.match(name)
        target = folder / name
        if match is None or not target.is_file():
            raise HTTPException(404, "no such file")
        return Response(target.read_bytes(), media_type=_MEDIA_TYPES[match.group(1)],
                        headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})

    return router


def _not_found_router(console: Console) -> APIRouter:
    """Last: any other ``/console`` URL is a 404 page with the console's headers, not bare JSON."""
    router = APIRouter(include_in_schema=False)

    @router.get(PATH + "/{rest:path}")
    async def not_found(request: Request, rest: str) -> Response:
        return console.error_page(request, 404, "Page not found", "There is no console page at this address.")

    return router


def console_routes(engine: Engine, settings: Any, *, service: Any = None, signer: Any = None, directory: Any = None,
                   throttle: LoginThrottle | None = None) -> APIRouter:
    """The console's routes. ``settings``: the service's (session minutes; the CSRF key is derived
    from its link signing key); ``signer`` signs exports and checks the chain; ``directory`` resolves
    patients; ``throttle``: the failed-login throttle (share the API's to count both together)."""
    console = Console(engine, session_minutes=settings.api_session_minutes,
                      csrf_key=settings.key_bytes("link_signing_key"), settings=settings, service=service,
                      signer=signer, directory=directory, throttle=throttle or LoginThrottle())
    router = APIRouter(include_in_schema=False)
    for module in _pages_modules():
        console.add_nav(getattr(module, "NAV", []))
        router.include_router(module.router(console), include_in_schema=False)  # pages, not API
    router.include_router(_static_router())
    router.include_router(_not_found_router(console))
    return router


async def _console_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleResponse)
    return exc.response


def install_console(app: FastAPI, engine: Engine, settings: Any, **parts: Any) -> None:
    """Mounts :func:`console_routes` on ``app`` with the handler that answers a ConsoleResponse."""
    app.include_router(console_routes(engine, settings, **parts))
    app.add_exception_handler(ConsoleResponse, _console_response)
