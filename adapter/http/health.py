"""Health endpoints: ``/livez`` and ``/readyz`` for an orchestrator, ``/health`` for a person or a monitor.

- ``GET /livez``: 200 while the process's event loop answers; touches no database (a database outage
  must not get every instance restarted).
- ``GET /readyz``: 200 when the database answers and its schema is at the latest migration (and, with
  ``readiness_checks_sending``, sending is not paused); 503 otherwise. The body names each check.
- ``GET /health``: counts and states of the inbox, outbox, inbound messages, alerts, templates, audit
  chain, feeds and subscriptions, and whether sending is paused. No identifiers, no PHI.

``/health``'s status code follows its ``status`` as draft-inadarei-api-health-check maps pass/warn/fail:
``ok`` (pass) and ``degraded`` (warn: open alerts, the service still does its work) answer 200; ``down``
(fail: database unreachable or schema behind, or sending paused, so nothing reaches a patient) answers 503,
with whatever detail could still be read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import column, func, inspect, table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from adapter.audit.checkpoints import audit_status
from adapter.conversation.tables import InboundMessage
from adapter.feeds.tables import InboxEvent
from adapter.feeds.tasks import feeds_health
from adapter.ops.alerts import count_open
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.tables import OutboxMessage, TemplateState
from adapter.service import Service
from adapter.storage.db import schema_heads

CHECK_TIMEOUT_SECONDS = 5.0  # a database that neither answers nor refuses must not hold a probe longer
OK, AT_HEAD = "ok", "at head"
_VERSIONS = table("alembic_version", column("version_num"))  # alembic's default, which adapter.storage.db keeps


@dataclass(frozen=True)
class Readiness:
    """Each check's verdict (``ok`` / ``at head`` or why not) and whether all passed."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(verdict in (OK, AT_HEAD) for verdict in self.checks.values())


def readiness(engine: Engine, *, check_sending: bool = False) -> Readiness:
    """One connection: the database answers, its schema is at head, and (``check_sending``) sending is
    not paused. A database error is a verdict, never an exception."""
    try:
        with engine.connect() as connection:
            # Read directly: alembic's MigrationContext logs two INFO lines per probe.
            current = frozenset(connection.execute(select(_VERSIONS.c.version_num)).scalars()
                                if inspect(connection).has_table(_VERSIONS.name) else ())
        checks = {"database": OK, "migrations": AT_HEAD if current == schema_heads() else
                  f"not at head (at {', '.join(sorted(current)) or 'no migration'}; "
                  f"latest {', '.join(sorted(schema_heads()))}; run `bridge migrate`)"}
        if check_sending:
            checks["sending"] = "paused" if sending_paused(engine) else OK
    except SQLAlchemyError as error:
        return Readiness({"database": f"unreachable ({type(error).__name__})"})
    return Readiness(checks)


def health(service: Service) -> dict[str, Any]:
    """Counts and states only: no identifiers, no PHI. ``status``: ``ok``, ``degraded`` or ``down``."""
    ready = readiness(service.engine)
    if not ready.ready:
        return {"status": "down", "mode": service.settings.mode, "checks": ready.checks}
    try:
        return _detail(service) | {"checks": ready.checks}
    except SQLAlchemyError as error:  # the database went away between the two reads
        return {"status": "down", "mode": service.settings.mode,
                "checks": {"database": f"unreachable ({type(error).__name__})"}}


def _detail(service: Service) -> dict[str, Any]:
    with Session(service.engine) as session:
        outbox = dict(session.exec(select(OutboxMessage.state, func.count()).group_by(col(OutboxMessage.state))).all())
        inbox = dict(session.exec(select(InboxEvent.state, func.count()).group_by(col(InboxEvent.state))).all())
        inbound = dict(session.exec(select(InboundMessage.state, func.count())
                                    .group_by(col(InboundMessage.state))).all())
        alerts = count_open(session)
        templates = dict(session.exec(select(TemplateState.status, func.count())
                                      .group_by(col(TemplateState.status))).all())
        audit = audit_status(session)
    paused = sending_paused(service.engine)
    return {
        "status": "down" if paused else "degraded" if alerts else "ok",
        "mode": service.settings.mode,
        "inbox": inbox,
        "outbox": outbox,
        "inbound": inbound,
        "sending_paused": paused is not None,
        "sending_paused_reason": paused.reason if paused else None,
        "sending_paused_since": paused.set_at.isoformat() if paused else None,
        "alerts": alerts,
        "templates": templates,
        "template_sync_error": service.template_sync_error,
        "subscriptions": [{"key": s.key, "status": s.status, "action": s.action} for s in service.subscriptions],
        "subscription_error": service.subscription_error,
        "audit": audit,
        "feeds": feeds_health(service.settings, service.engine),
    }


async def _bounded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call`` in a worker thread, or None when it has not answered within the check timeout."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(call, *args, **kwargs), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return None


def build_health_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["health"])
    no_answer = {"database": f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"}
    unavailable: dict[int | str, dict[str, Any]] = {
        503: {"description": "Not ready or down; the body says which check failed."}}

    @router.get("/livez", summary="Liveness: the process answers (no database call).")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz", summary="Readiness: database reachable, schema at head (sending not paused, "
                "per setting).", responses=unavailable)
    async def readyz() -> JSONResponse:
        found = await _bounded(readiness, service.engine, check_sending=service.settings.readiness_checks_sending)
        ready = found if found is not None else Readiness(no_answer)
        return JSONResponse({"status": "ready" if ready.ready else "not ready", "checks": ready.checks},
                            status_code=200 if ready.ready else 503)

    @router.get("/health", summary="Counts and states of the queues, alerts, templates, feeds and audit chain.",
                responses=unavailable)
    async def get_health() -> JSONResponse:
        report = await _bounded(health, service) or {"status": "down", "mode": service.settings.mode,
                                                     "checks": no_answer}
        return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)

    return router
