"""The FastAPI dependency that authenticates a request's session token and enforces its role on
the auditor and admin APIs (45 CFR 164.312(a)(1) access control, 164.312(d) authentication), and
the browser console's cookie sessions (:func:`touch_session`: the same sessions, with an idle timeout,
45 CFR 164.312(a)(2)(iii) automatic logoff).

Every refusal is audited: a missing, forged, expired or ended session token as a security alert
(outcome 8), a valid session with the wrong role as a security alert with outcome 4. The token
itself is never logged or recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta

from fastapi import HTTPException, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.security.credentials import AuthenticationError, authenticate, live_session, principal_of
from adapter.security.roles import Principal, Role
from adapter.storage.db import transaction, utcnow


def source_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def route_template(request: Request) -> str:
    """The matched route's full template (``/admin/alerts/{alert_id}/ack``), never the URL: no ids
    in an audit detail. A route of a router included into another router is matched as its own
    (prefix-less) route; its full template is FastAPI's effective route context, where that exists."""
    effective = (request.scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(effective, "path_format", None) or getattr(request.scope.get("route"), "path", "?")
    return str(template)[:100]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class AccessControl:
    """Checks ``Authorization: Bearer <session token>`` against the sessions table."""

    def __init__(self, engine: Engine, session_minutes: int) -> None:
        self.engine = engine
        self.session_minutes = session_minutes

    def require(self, *roles: Role) -> Callable[[Request], Awaitable[object]]:
        """A FastAPI dependency returning the :class:`~adapter.security.roles.Principal`; 401
        without a live session, 403 for a role not in ``roles``."""
        allowed = frozenset(roles)

        async def dependency(request: Request) -> Principal:
            token = bearer(request)
            source = source_of(request)
            path = route_template(request)
            if token is None:
                await asyncio.to_thread(self._refused, None, source, path, "missing", None)
                raise HTTPException(401, "a session token is required", {"WWW-Authenticate": "Bearer"})
            try:
                principal = await asyncio.to_thread(authenticate, self.engine, token)
            except AuthenticationError as error:
                await asyncio.to_thread(self._refused, None, source, path, error.reason, None)
                raise HTTPException(401, "the session token is not valid", {"WWW-Authenticate": "Bearer"}) from None
            if principal.role not in allowed:
                await asyncio.to_thread(self._refused, principal, source, path, "role", principal.role)
                raise HTTPException(403, "this role may not use this endpoint")
            return principal

        return dependency

    def _refused(self, principal: object, source: str | None, path: str, reason: str, role: str | None) -> None:
        agent = principal.agent if isinstance(principal, Principal) else "unknown"
        outcome = Outcome.MINOR_FAILURE if reason == "role" else Outcome.SERIOUS_FAILURE
        with transaction(self.engine) as session:
            record(session, AuditEntry(Kind.SECURITY_ALERT, Action.EXECUTE, outcome, agent=agent, agent_role=role,
                                       source=source, detail={"reason": reason, "path": path}))


def touch_session(session: Session, token: str, *, idle: timedelta, max_age: timedelta) -> Principal:
    """The principal of a live console session, whose expiry it moves to ``idle`` from now (never
    beyond ``max_age`` after login): a session left alone for ``idle`` ends, one in use lasts at most
    ``max_age``. Raises :class:`AuthenticationError` (``unknown``, ``ended``, ``expired``). Call it in
    the transaction that records the page view, so the view and the renewal commit together."""
    api_session, credential = live_session(session, token)
    now = utcnow()
    created = api_session.created_at if api_session.created_at.tzinfo else api_session.created_at.replace(tzinfo=UTC)
    api_session.expires_at = min(now + idle, created + max_age)
    session.add(api_session)
    return principal_of(api_session, credential)
