"""What the operator pages share: who may use them, the running service behind them, the confirmation step
every state change goes through, and times shown as people read them.

Roles (README, "Console"): ``operator`` views and makes the everyday changes (ack an alert, retry a dead
letter, resume sending); ``admin`` also pauses sending, syncs templates and replays a resource.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from fastapi.responses import HTMLResponse

from adapter.console.operator_actions import Actor
from adapter.console.operator_queries import aware
from adapter.console.web import Console
from adapter.security.access import source_of
from adapter.security.roles import Principal, Role
from adapter.service import Service

OPERATORS = (Role.OPERATOR, Role.ADMIN)
ADMINS = (Role.ADMIN,)
CONFIRMED = "yes"  # the value of the "I confirm" checkbox


class ServiceUnavailableError(RuntimeError):
    """The console was built without the running service (a wiring mistake)."""


def service_of(console: Console) -> Service:
    """The running service the console was built with: its outbox, pipeline, EHR client and settings are
    those the pages act through."""
    if not isinstance(console.service, Service):
        raise ServiceUnavailableError("the operator pages need the running service (Console(service=...))")
    return console.service


def actor(request: Request, principal: Principal) -> Actor:
    return Actor(principal, source_of(request))


def is_admin(principal: Principal) -> bool:
    return principal.role == Role.ADMIN


def confirmed(form: dict[str, str]) -> bool:
    return form.get("confirm") == CONFIRMED


def confirm_page(console: Console, request: Request, principal: Principal, *, title: str, action: str,
                 what: str, fields: dict[str, str], button: str, back: str, warning: str | None = None,
                 status_code: int = 200) -> HTMLResponse:
    """The confirmation step: the same form again, with what it will do in words and an "I confirm" box
    that must be ticked (an unticked post comes back here)."""
    return console.render(request, principal, "operator/confirm.html", status_code=status_code, title=title,
                          action=action, what=what, fields=fields, button=button, back=back, warning=warning)


def when(moment: datetime | None) -> str:
    """``2026-12-03 08:15 UTC``; an empty string for no time."""
    return f"{aware(moment):%Y-%m-%d %H:%M} UTC" if moment is not None else ""


def age(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 days``; ``-`` when there is nothing waiting."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def int_field(form: dict[str, str], name: str) -> int | None:
    """A positive integer form field, or None when it is missing or not one."""
    value = form.get(name, "").strip()
    return int(value) if value.isdigit() and len(value) <= 10 else None
