"""The FastAPI dependency that authenticates a request's session token and enforces its role on
the auditor and admin APIs (45 CFR 164.312(a)(1) access control, 164.312(d) authentication).

Every refusal is audited: a missing, forged, expired or ended session token as a security alert
(outcome 8), a valid session with the wrong role as a security alert with outcome 4. The token
itself is never logged or recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from sqlalchemy.engine import Engine

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.security.credentials import AuthenticationError, authenticate
from adapter.security.roles import Principal, Role
from adapter.storage.db import transaction


def source_of(request: Request) -> str | None:
    return request.client.host if request.client else None


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
            route = request.scope.get("route")
            # The route's template (``/admin/alerts/{alert_id}/ack``), not the URL: no ids in the detail.
            path = str(getattr(route, "path", "?"))[:100]
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
