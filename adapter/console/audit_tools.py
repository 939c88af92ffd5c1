"""The auditor's console tools: the chain and its signed checkpoints with a button that runs
``verify`` (:mod:`adapter.audit.verify`), the CSV export with its signed manifest
(:mod:`adapter.audit.csv_export`, auditor only, as in the API), and the privacy officer's resolve of a
patient reference to a person with a stated reason (audited before anything is shown, as in the API).

The export downloads as one ZIP holding ``audit-<time>.csv`` and ``audit-<time>.manifest.json``
(the API sends the manifest in a header, which a browser download would lose), checked with the
audit public key by :func:`adapter.audit.csv_export.verify_export`.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session

from adapter.audit.checkpoints import audit_status
from adapter.audit.csv_export import build_export
from adapter.audit.search import AuditQueryError, parse_query
from adapter.audit.tables import AuditCheckpoint
from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.audit.verify import VerifyReport, verify_trail
from adapter.console.audit_pages import READERS, FilterError, search_pairs
from adapter.console.audit_words import when_words
from adapter.console.web import PAGE_HEADERS, PATH, Console, NavEntry
from adapter.http.audit_api import ResolveRequest, query_detail
from adapter.security.access import source_of
from adapter.security.roles import AUDIT_READERS, Principal, Role
from adapter.storage.db import table_of, transaction

NAV: list[NavEntry] = [("Chain and checkpoints", f"{PATH}/audit/chain", READERS),
                       ("Resolve a patient", f"{PATH}/audit/resolve", frozenset({Role.PRIVACY_OFFICER}))]
RECENT_CHECKPOINTS = 10


def chain_state(console: Console) -> dict[str, Any]:
    """Numbers and the last checkpoints only: no record content."""
    with Session(console.engine) as session:
        status = audit_status(session)
        table = table_of(AuditCheckpoint)
        rows = session.execute(select(table.c.seq, table.c.first_seq, table.c.created_at, table.c.key_id)
                               .order_by(table.c.seq.desc()).limit(RECENT_CHECKPOINTS)).all()
    checkpoints = [{"seq": seq, "first_seq": first, "at": when_words(at), "key_id": key}
                   for seq, first, at, key in rows]
    if status.get("checkpoint_at"):
        status["checkpoint_at"] = when_words(datetime.fromisoformat(status["checkpoint_at"]))
    key_id = console.signer.public.key_id if console.signer is not None else None
    return {"status": status, "checkpoints": checkpoints, "key_id": key_id}


def zipped(name: str, data: bytes, manifest_json: str) -> tuple[str, bytes]:
    stem = name.removesuffix(".csv")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
        archive.writestr(f"{stem}.manifest.json", manifest_json)
    return f"{stem}.zip", buffer.getvalue()


def router(console: Console) -> APIRouter:
    router = APIRouter(prefix=f"{PATH}/audit", include_in_schema=False)
    readers = console.require(*AUDIT_READERS)
    auditors = console.require(Role.AUDITOR)
    officers = console.require(Role.PRIVACY_OFFICER)

    def audited(principal: Principal, request: Request, kind: Kind, op: str, outcome: Outcome = Outcome.SUCCESS,
                **detail: Any) -> AuditEntry:
        return AuditEntry(kind, Action.EXECUTE, outcome, agent=principal.agent, agent_role=principal.role.value,
                          source=source_of(request), entity_ref="AuditEvent", detail={"op": op, **detail})

    @router.get("/chain")
    async def get_chain(request: Request, principal: Principal = Depends(readers)) -> Response:
        state = await asyncio.to_thread(chain_state, console)
        return console.render(request, principal, "audit/chain.html", report=None, **state)

    @router.post("/chain/verify")
    async def post_verify(request: Request, principal: Principal = Depends(readers)) -> Response:
        await console.form(request, principal)
        if console.signer is None:
            return console.error_page(request, 503, "No audit key", "No audit signing key is configured "
                                      "(audit_signing_key_file): checkpoints cannot be checked.", principal)

        def run() -> VerifyReport:
            report = verify_trail(console.engine, console.signer.public)
            console.record(audited(principal, request, Kind.AUDIT_ACCESS, "verify",
                                   Outcome.SUCCESS if report.ok else Outcome.MINOR_FAILURE,
                                   ok=report.ok, checked=report.checked))
            return report

        report = await asyncio.to_thread(run)
        state = await asyncio.to_thread(chain_state, console)
        return console.render(request, principal, "audit/chain.html", report=report, **state)

    @router.post("/export")
    async def post_export(request: Request, principal: Principal = Depends(auditors)) -> Response:
        fields = await console.form(request, principal)
        if console.signer is None:
            return console.error_page(request, 503, "No audit key", "No audit signing key is configured "
                                      "(audit_signing_key_file): exports cannot be signed.", principal)
        try:
            pairs = [pair for pair in search_pairs(fields) if pair[0] not in ("_count", "_offset")]
            query = parse_query(pairs)
        except (FilterError, AuditQueryError) as error:
            return console.error_page(request, 400, "Export refused", str(error), principal)

        def run() -> tuple[str, bytes]:
            with transaction(console.engine) as session:
                name, data, manifest = build_export(session, query, console.signer)
                record(session, AuditEntry(
                    Kind.AUDIT_ACCESS, Action.EXECUTE, agent=principal.agent, agent_role=principal.role.value,
                    source=source_of(request), patient_ref=fields.get("patient") or None, entity_ref="AuditEvent",
                    detail={"op": "export", **query_detail(pairs)}))
            return zipped(name, data, manifest.to_json())

        name, archive = await asyncio.to_thread(run)
        return Response(archive, media_type="application/zip",
                        headers={**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})

    @router.get("/resolve")
    async def get_resolve(request: Request, principal: Principal = Depends(officers)) -> Response:
        return console.render(request, principal, "audit/resolve.html", fields={}, person=None)

    @router.post("/resolve")
    async def post_resolve(request: Request, principal: Principal = Depends(officers)) -> Response:
        fields = await console.form(request, principal)

        def page(status: int, **context: Any) -> Response:
            return console.render(request, principal, "audit/resolve.html", status, fields=fields,
                                  **{"person": None, **context})

        try:
            body = ResolveRequest(patient=fields.get("patient", "").strip(), reason=fields.get("reason", "").strip())
        except ValidationError:
            return page(400, error="Enter a reference like Patient/123 and a reason of one line (300 characters "
                                   "at most).")
        if fields.get("confirm") != "yes":
            return page(400, error="Tick the box to confirm that this look-up is needed for the stated reason.")
        if console.directory is None:
            return page(503, error="No patient directory is configured.")
        entry = AuditEntry(Kind.RESOLVE, Action.READ, agent=principal.agent, agent_role=principal.role.value,
                           source=source_of(request), patient_ref=body.patient, entity_ref=body.patient,
                           purpose=body.reason)
        try:
            person = await console.directory.person(body.patient)
        except Exception as error:  # any EHR failure: the attempt is audited all the same
            failed = AuditEntry(**{**entry.__dict__, "outcome": Outcome.SERIOUS_FAILURE,
                                   "detail": {"error": type(error).__name__}})
            await asyncio.to_thread(console.record, failed)
            return page(502, error="The EHR could not be read; the attempt was recorded.")
        await asyncio.to_thread(console.record, entry)  # audited before anything is shown
        return page(200, person=person, patient=body.patient)

    return router
