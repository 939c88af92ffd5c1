"""The admin API: operations over what the service already has (the sending circuit breaker,
operator alerts, API credentials), for the ``admin`` role, each audited as ``admin``. The read-mostly
``operator`` role may read the status, acknowledge alerts and resume sending; never pause or manage keys.

Admins configure and operate; they never read audit content (that is ``/audit``, for auditors),
so a compromised admin credential cannot mine the trail (minimum necessary, 45 CFR 164.502(b)).

Bodies are read after the role check (:func:`adapter.http.json_body.json_body`); text that will be
stored or logged is one line without control characters (PostgreSQL's text cannot hold NUL, and a
newline would forge a log line). An id in a path that no row can have (beyond the 4-byte integer
keys), or a credential name that no credential can have, is answered 404 without a query.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.http.api_docs import SESSION_SECURITY, session_errors
from adapter.http.json_body import ONE_LINE, body_doc, json_body
from adapter.ops.alerts import acknowledge, count_open
from adapter.ops.tables import ServiceFlag
from adapter.outbox.circuit_breaker import SENDING_PAUSED, pause_sending, resume_sending, sending_paused
from adapter.outbox.tables import TemplateState
from adapter.security.access import AccessControl, source_of
from adapter.security.credentials import CredentialError, create_credential, revoke_credential
from adapter.security.roles import Principal, Role
from adapter.storage.db import transaction

MAX_ROW_ID = 2**31 - 1  # row ids are 4-byte integer keys (PostgreSQL ``integer``)


class PauseRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=300, pattern=ONE_LINE)


class CredentialRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role


# Response bodies, for the OpenAPI document (the handlers build them as JSON).
class StatusResponse(BaseModel):
    sending_paused: bool
    sending_paused_reason: str | None
    alerts: dict[str, int] = Field(description="Open operator alerts by kind.")
    templates: dict[str, int] = Field(description="WhatsApp templates by review state.")


class SendingResponse(BaseModel):
    paused: bool
    changed: bool = Field(description="Whether this call changed the state.")


class AckResponse(BaseModel):
    acknowledged: int


class CredentialCreated(BaseModel):
    name: str
    role: Role
    key: str = Field(description="The API key, shown once (only its hash is kept).")


class CredentialRevoked(BaseModel):
    revoked: str


def status(engine: Engine) -> dict[str, Any]:
    """Counts and states only: no identifiers, no PHI."""
    with Session(engine) as session:
        alerts = count_open(session)
        templates = dict(session.exec(select(TemplateState.status, func.count())
                                      .group_by(col(TemplateState.status))).all())
    paused = sending_paused(engine)
    return {"sending_paused": paused is not None, "sending_paused_reason": paused.reason if paused else None,
            "alerts": alerts, "templates": templates}


def build_admin_router(engine: Engine, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/admin")
    admins = access.require(Role.ADMIN)
    # The read-mostly operations role: counts, acknowledging alerts and resuming, as in the console.
    operations = access.require(Role.ADMIN, Role.OPERATOR)

    def audit(principal: Principal, request: Request, action: Action, op: str, entity: str | None = None) -> None:
        with transaction(engine) as session:
            record(session, AuditEntry(Kind.ADMIN, action, agent=principal.agent, agent_role=principal.role.value,
                                       source=source_of(request), entity_ref=entity, detail={"op": op}))

    @router.get("/status", operation_id="admin_status", response_model=StatusResponse,
                responses=session_errors(), openapi_extra=SESSION_SECURITY,
                description="Sending pause, open alerts by kind and template states (counts only).")
    async def get_status(request: Request, principal: Principal = Depends(operations)) -> JSONResponse:
        await asyncio.to_thread(audit, principal, request, Action.READ, "status")
        return JSONResponse(await asyncio.to_thread(status, engine))

    @router.post("/sending/pause", operation_id="admin_pause_sending", response_model=SendingResponse,
                 responses=session_errors(400, 413, 422), openapi_extra={**body_doc(PauseRequest), **SESSION_SECURITY},
                 description="Pauses all sending (the circuit breaker) with a stated reason; messages wait.")
    async def post_pause(request: Request, principal: Principal = Depends(admins),
                         body: PauseRequest = Depends(json_body(PauseRequest))) -> JSONResponse:
        def run() -> bool:
            with transaction(engine) as session:
                already = session.get(ServiceFlag, SENDING_PAUSED) is not None
                pause_sending(session, f"paused by {principal.agent}: {body.reason}")
                record(session, AuditEntry(Kind.ADMIN, Action.UPDATE, agent=principal.agent,
                                           agent_role=principal.role.value, source=source_of(request),
                                           entity_ref="service_flag/sending_paused", detail={"op": "pause"}))
                return not already

        return JSONResponse({"paused": True, "changed": await asyncio.to_thread(run)})

    @router.post("/sending/resume", operation_id="admin_resume_sending", response_model=SendingResponse,
                 responses=session_errors(), openapi_extra=SESSION_SECURITY,
                 description="Resumes sending after a pause (held messages go at once).")
    async def post_resume(request: Request, principal: Principal = Depends(operations)) -> JSONResponse:
        changed = await asyncio.to_thread(resume_sending, engine)
        await asyncio.to_thread(audit, principal, request, Action.UPDATE, "resume", "service_flag/sending_paused")
        return JSONResponse({"paused": False, "changed": changed})

    @router.post("/alerts/{alert_id}/ack", operation_id="admin_ack_alert", response_model=AckResponse,
                 responses=session_errors(404, 422), openapi_extra=SESSION_SECURITY,
                 description="Acknowledges one open operator alert.")
    async def post_ack(alert_id: int, request: Request, principal: Principal = Depends(operations)) -> JSONResponse:
        # Checked here, not in the database: PostgreSQL refuses to compare an integer key with a larger
        # number, and SQLite cannot bind one beyond 64 bits.
        count = await asyncio.to_thread(acknowledge, engine, alert_id) if 1 <= alert_id <= MAX_ROW_ID else 0
        if not count:
            raise HTTPException(404, "no open alert with this id")
        await asyncio.to_thread(audit, principal, request, Action.UPDATE, "alert-ack", f"alert/{alert_id}")
        return JSONResponse({"acknowledged": count})

    @router.post("/credentials", status_code=201, operation_id="admin_create_credential",
                 response_model=CredentialCreated, responses=session_errors(400, 409, 413, 422),
                 openapi_extra={**body_doc(CredentialRequest), **SESSION_SECURITY},
                 description="Creates an API key for a role; the key is in this answer only.")
    async def post_credential(request: Request, principal: Principal = Depends(admins),
                              body: CredentialRequest = Depends(json_body(CredentialRequest))) -> JSONResponse:
        try:  # create_credential audits the creation itself
            key = await asyncio.to_thread(create_credential, engine, body.name, body.role, principal.agent,
                                          source_of(request))
        except CredentialError as error:
            raise HTTPException(409, str(error)) from None
        return JSONResponse({"name": body.name.strip(), "role": body.role.value, "key": key}, status_code=201,
                            headers={"Cache-Control": "no-store"})

    @router.delete("/credentials/{name}", operation_id="admin_revoke_credential",
                   response_model=CredentialRevoked, responses=session_errors(404), openapi_extra=SESSION_SECURITY,
                   description="Revokes an API key by name, and ends its sessions.")
    async def delete_credential(name: str, request: Request, principal: Principal = Depends(admins)) -> JSONResponse:
        if not name.isprintable() or len(name) > 100:  # no credential has such a name (create_credential)
            raise HTTPException(404, "no active credential with this name")
        try:
            await asyncio.to_thread(revoke_credential, engine, name, principal.agent, source_of(request))
        except CredentialError as error:
            raise HTTPException(404, str(error)) from None
        return JSONResponse({"revoked": name})

    return router
