"""The auditor API: login/logout, the audit trail as FHIR AuditEvent searchsets (IHE BALP), signed
CSV exports, and the privacy officer's resolve of a patient reference to a person.

Every query, export and resolve is itself audited (``audit-access`` / ``resolve``) in the same
transaction as its read, so the audit trail cannot be read without leaving a trace (45 CFR
164.312(b)). The query's parameters go into the audit detail, with dates compacted so the PHI guard
of :func:`adapter.audit.trail.record` does not mistake them for phone numbers.

``POST /auth/login`` takes the key as ``Authorization: Bearer <key>`` or a JSON body ``{"key": …}``.
Failed logins are throttled per client address (429 with ``Retry-After``;
:mod:`adapter.security.login_throttle`). A body that cannot be a login request — not JSON, nested
deeper than the parser follows, a key that is not an ASCII string (a lone surrogate, say) — is
answered 400 before any key is looked up; one over 16 KiB 413 (:mod:`adapter.http.json_body`); a
database that cannot be reached 503 with ``Retry-After``. The resolve's body is read after the role
check, its reason one line without control characters; a query parameter holding NUL is a 400.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from adapter.audit.balp import to_audit_event, to_bundle
from adapter.audit.csv_export import build_export
from adapter.audit.search import MAX_VALUE_CHARS, AuditQuery, AuditQueryError, parse_query, search_audit
from adapter.audit.signing import AuditSigner
from adapter.audit.trail import _PHONE_LIKE, Action, AuditEntry, Kind, Outcome, record
from adapter.http.api_docs import SESSION_SCHEME, SESSION_SECURITY, errors, session_errors
from adapter.http.json_body import ONE_LINE, BodyError, body_doc, json_body, load_json, read_capped
from adapter.security.access import AccessControl, bearer, source_of
from adapter.security.credentials import AuthenticationError, LoginResult, LoginThrottled, login, logout
from adapter.security.login_throttle import LoginThrottle
from adapter.security.roles import AUDIT_READERS, Principal, Role
from adapter.storage.db import transaction

MANIFEST_HEADER = "X-Audit-Manifest"  # base64url of the manifest JSON (the CSV and its proof in one response)
RETRY_AFTER_SECONDS = "5"


class PatientDirectory(Protocol):
    """Reads who a patient reference is (the EHR's Patient resource)."""

    async def person(self, patient_ref: str) -> dict[str, Any]: ...


class FhirPatientDirectory:
    """:class:`PatientDirectory` over the EHR's FHIR API (https://hl7.org/fhir/R4/http.html#read): name
    and identifiers of the Patient. ``fhir`` returns the client, which exists only once the service started."""

    def __init__(self, fhir: Callable[[], Any]) -> None:
        self._fhir = fhir

    async def person(self, patient_ref: str) -> dict[str, Any]:
        resource_type, _, resource_id = patient_ref.partition("/")
        client = self._fhir()
        if resource_type != "Patient" or not resource_id or client is None:
            raise ValueError("not a Patient reference, or no EHR client yet")
        patient = await client.read("Patient", resource_id)
        return {"name": patient.get("name", []), "identifier": patient.get("identifier", [])}


class ResolveRequest(BaseModel):
    patient: str = Field(min_length=3, max_length=200, pattern=r"^Patient/[A-Za-z0-9\-.]{1,64}$")
    reason: str = Field(min_length=1, max_length=300, pattern=ONE_LINE)


class LoginRequest(BaseModel):
    """Documents the login body (read by :func:`login_key`, not validated by this model)."""

    key: str


# Response bodies, for the OpenAPI document (the handlers build them as JSON).
class LoginResponse(BaseModel):
    token: str = Field(description="The session token: send it as `Authorization: Bearer`.")
    role: Role
    expires_at: str = Field(description="When the session ends (ISO 8601 with offset).")


class LogoutResponse(BaseModel):
    ended: bool


class ResolveResponse(BaseModel):
    patient: str
    name: list[dict[str, Any]] = Field(description="The EHR Patient's `name` (FHIR HumanName list).")
    identifier: list[dict[str, Any]] = Field(description="The EHR Patient's `identifier` list.")


# The search parameters parse_query takes, for the OpenAPI document (the handlers read the query
# themselves: an unknown parameter is a 400, not ignored).
_SEARCH_DOC: dict[str, Any] = {"parameters": [
    *({"name": name, "in": "query", "required": False,
       "schema": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS}}
      for name in ("patient", "entity", "agent", "type", "subtype", "outcome", "action")),
    {"name": "date", "in": "query", "required": False, "explode": True, "schema": {"type": "array", "items": {
        "type": "string", "pattern": r"^(eq|ge|gt|le|lt)?[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]+(Z|[+-][0-9:]+)?)?$"}}},
    {"name": "_count", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
    {"name": "_offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}]}
_FHIR_JSON_DOC = {"content": {"application/fhir+json": {"schema": {"type": "object"}}}}


def outcome_400(message: str) -> JSONResponse:
    """A FHIR OperationOutcome (https://hl7.org/fhir/R4/operationoutcome.html)."""
    return JSONResponse({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": message}]}, status_code=400,
        media_type="application/fhir+json")


def query_detail(pairs: Sequence[tuple[str, str]]) -> dict[str, str | int]:
    """The query's parameters as PHI-free audit detail: ``q.<name>[.<n>]`` keys, dates without
    separators (``ge20261125T000000Z``), anything still phone-like replaced by ``(withheld)``."""
    detail: dict[str, str | int] = {}
    for index, (name, value) in enumerate(pairs[:20]):
        compact = re.sub(r"[-:]", "", value) if name == "date" else value
        compact = compact[:120]
        key = f"q.{name[:20]}" if f"q.{name[:20]}" not in detail else f"q.{name[:20]}.{index}"
        detail[key] = "(withheld)" if _PHONE_LIKE.search(compact) else compact
    return detail


async def login_key(request: Request) -> str | None:
    """The key a login request carries (``Authorization: Bearer``, else a JSON body's ``key``), or None;
    raises :class:`~adapter.http.json_body.BodyError` for a body that is too large (413) or cannot be
    a login request (400)."""
    key = bearer(request)
    if key is not None or not request.headers.get("content-type", "").startswith("application/json"):
        return key
    raw = await read_capped(request)
    if not raw.strip():
        return None
    document = load_json(raw)
    value = document.get("key") if isinstance(document, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise BodyError(400, "the key must be a string")
    if not value.isascii():  # keys are URL-safe base64; this also refuses a lone surrogate ("\ud800")
        raise BodyError(400, "the key is not an API key (keys are ASCII)")
    return value


def nul_in(pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether a query parameter holds NUL, which no stored value has (PostgreSQL text cannot hold it)."""
    return any("\x00" in name or "\x00" in value for name, value in pairs)


def _page_url(request: Request, query: AuditQuery, offset: int) -> str:
    pairs = [(k, v) for k, v in query.pairs if k not in ("_offset", "_count")]
    pairs += [("_count", str(query.count)), ("_offset", str(offset))]
    return str(request.url.replace(query=urlencode(pairs)))


def build_audit_router(engine: Engine, access: AccessControl, *, observer: str, signer: AuditSigner | None = None,
                       directory: PatientDirectory | None = None, throttle: LoginThrottle | None = None) -> APIRouter:
    """``observer`` names this service in ``AuditEvent.source.observer``; without ``signer`` the CSV
    export answers 503, without ``directory`` the resolve does. ``throttle``: the failed-login throttle
    (default: one per router, i.e. per process)."""
    router = APIRouter()
    throttle = throttle or LoginThrottle()
    readers = access.require(*AUDIT_READERS)
    auditors = access.require(Role.AUDITOR)
    officers = access.require(Role.PRIVACY_OFFICER)

    @router.post("/auth/login", operation_id="auth_login", response_model=LoginResponse,
                 responses=errors(400, 401, 413, 429, 503),
                 openapi_extra={**body_doc(LoginRequest, required=False), "security": [{"apiKey": []}, {}]},
                 description="Exchanges an API key (as `Authorization: Bearer`, or a JSON body's `key`) for a "
                             "session token. Failed logins are throttled per address.")
    async def post_login(request: Request) -> JSONResponse:
        try:
            key = await login_key(request)
        except BodyError as error:
            return JSONResponse({"detail": str(error)}, status_code=error.status)
        try:
            result: LoginResult = await asyncio.to_thread(
                login, engine, key or "", source_of(request), minutes=access.session_minutes, throttle=throttle)
        except LoginThrottled as throttled:
            return JSONResponse({"detail": "too many failed logins from this address; retry later"},
                                status_code=429, headers={"Retry-After": str(throttled.retry_after)})
        except AuthenticationError:
            raise HTTPException(401, "the API key is not valid", {"WWW-Authenticate": "Bearer"}) from None
        except OperationalError:  # the database cannot be reached: nothing was decided
            return JSONResponse({"detail": "temporarily unable to log in; retry later"}, status_code=503,
                                headers={"Retry-After": RETRY_AFTER_SECONDS})
        return JSONResponse({"token": result.token, "role": result.role.value,
                             "expires_at": result.expires_at.isoformat()}, headers={"Cache-Control": "no-store"})

    @router.post("/auth/logout", operation_id="auth_logout", response_model=LogoutResponse,
                 openapi_extra={"security": [{SESSION_SCHEME: []}, {}]},
                 description="Ends the session whose token is sent; `ended` says whether one was live.")
    async def post_logout(request: Request) -> JSONResponse:
        token = bearer(request)
        ended = bool(token) and await asyncio.to_thread(logout, engine, token or "", source_of(request))
        return JSONResponse({"ended": ended})

    def _audited(principal: Principal, request: Request, pairs: Sequence[tuple[str, str]], op: str,
                 patient: str | None) -> AuditEntry:
        return AuditEntry(Kind.AUDIT_ACCESS, Action.EXECUTE, agent=principal.agent, agent_role=principal.role.value,
                          source=source_of(request), patient_ref=patient, entity_ref="AuditEvent",
                          detail={"op": op, **query_detail(pairs)})

    @router.get("/audit/AuditEvent", operation_id="audit_search", openapi_extra={**_SEARCH_DOC, **SESSION_SECURITY},
                responses={200: {**_FHIR_JSON_DOC, "description": "A FHIR searchset Bundle of AuditEvents"},
                           400: {**_FHIR_JSON_DOC, "description": "An unknown or malformed parameter: an "
                                 "OperationOutcome"}, **session_errors()},
                description="Searches the audit trail as FHIR AuditEvents (auditor, privacy officer); paged "
                            "with `_count`/`_offset`. The search itself is audited.")
    async def get_audit_events(request: Request, principal: Principal = Depends(readers)) -> Response:
        pairs = request.query_params.multi_items()
        if nul_in(pairs):
            return outcome_400("a query parameter holds NUL")
        try:
            query = parse_query(pairs)
        except AuditQueryError as error:
            return outcome_400(str(error))
        patient = dict(pairs).get("patient")

        def run() -> tuple[list[dict[str, Any]], int]:
            with transaction(engine) as session:
                rows, total = search_audit(session, query)
                record(session, _audited(principal, request, pairs, "search", patient))
                return [to_audit_event(row.event, row.seq, source_observer=observer) for row in rows], total

        resources, total = await asyncio.to_thread(run)
        links = {"self": _page_url(request, query, query.offset)}
        if query.offset + query.count < total and query.count:
            links["next"] = _page_url(request, query, query.offset + query.count)
        if query.offset and query.count:
            links["previous"] = _page_url(request, query, max(0, query.offset - query.count))
        return JSONResponse(to_bundle(resources, total, links), media_type="application/fhir+json")

    @router.get("/audit/export.csv", operation_id="audit_export_csv", openapi_extra={**_SEARCH_DOC, **SESSION_SECURITY},
                responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                 "description": "The matching records as CSV; a signed manifest in the header"},
                           400: {**_FHIR_JSON_DOC, "description": "An unknown or malformed parameter: an "
                                 "OperationOutcome"}, **session_errors(503)},
                description="Exports the matching audit records as CSV with an Ed25519-signed manifest (auditor). "
                            "503 when no audit signing key is configured.")
    async def get_export(request: Request, principal: Principal = Depends(auditors)) -> Response:
        if signer is None:
            raise HTTPException(503, "no audit signing key is configured (audit_signing_key_file)")
        pairs = request.query_params.multi_items()
        if nul_in(pairs):
            return outcome_400("a query parameter holds NUL")
        try:
            query = parse_query(pairs)
        except AuditQueryError as error:
            return outcome_400(str(error))

        def run() -> tuple[str, bytes, str]:
            with transaction(engine) as session:
                name, data, manifest = build_export(session, query, signer)
                record(session, _audited(principal, request, pairs, "export", dict(pairs).get("patient")))
                return name, data, manifest.to_json()

        name, data, manifest_json = await asyncio.to_thread(run)
        encoded = base64.urlsafe_b64encode(manifest_json.encode()).decode("ascii")
        return Response(data, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{name}"', MANIFEST_HEADER: encoded,
            "Cache-Control": "no-store"})

    @router.post("/audit/resolve", operation_id="audit_resolve_patient", response_model=ResolveResponse,
                 responses=session_errors(400, 413, 422, 502, 503),
                 openapi_extra={**body_doc(ResolveRequest), **SESSION_SECURITY},
                 description="Resolves a Patient reference to the person's name and identifiers, with a stated "
                             "reason (privacy officer); audited before anything is returned.")
    async def post_resolve(request: Request, principal: Principal = Depends(officers),
                           body: ResolveRequest = Depends(json_body(ResolveRequest))) -> JSONResponse:
        reason = body.reason.strip()
        if not reason:
            raise HTTPException(422, "a reason is required")
        if directory is None:
            raise HTTPException(503, "no patient directory is configured")
        entry = AuditEntry(Kind.RESOLVE, Action.READ, agent=principal.agent, agent_role=principal.role.value,
                           source=source_of(request), patient_ref=body.patient, entity_ref=body.patient,
                           purpose=reason)
        try:
            person = await directory.person(body.patient)
        except Exception as error:  # any EHR failure: the attempt is audited all the same
            failed = AuditEntry(**{**entry.__dict__, "outcome": Outcome.SERIOUS_FAILURE,
                                   "detail": {"error": type(error).__name__}})
            await asyncio.to_thread(_record_alone, engine, failed)
            raise HTTPException(502, "the EHR could not be read") from None
        await asyncio.to_thread(_record_alone, engine, entry)  # audited before anything is returned
        return JSONResponse({"patient": body.patient, **person}, headers={"Cache-Control": "no-store"})

    return router


def _record_alone(engine: Engine, entry: AuditEntry) -> None:
    with transaction(engine) as session:
        record(session, entry)
