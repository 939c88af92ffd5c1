"""The auditor's console pages (roles ``auditor`` and ``privacy_officer``): search the audit trail with
the API's filters (:mod:`adapter.audit.search`), one record in full as a BALP AuditEvent
(:mod:`adapter.audit.balp`) and in plain words, and who opened a patient's portal links, when and
from where (the ``link-access`` records of :mod:`adapter.audit.link_access`).

As in the API (:mod:`adapter.http.audit_api`), every search and every record shown is itself audited
(``audit-access``) in the transaction that reads it (45 CFR 164.312(b)). A patient reference travels
only in POST bodies, never in a URL (no PHI in URLs, logs or browser history).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlmodel import col, select

from adapter.audit.balp import to_audit_event
from adapter.audit.search import AuditQueryError, AuditRow, parse_query, search_audit
from adapter.audit.tables import AuditChain, AuditEvent
from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.console.audit_words import agent_words, describe, detail_of, when_words
from adapter.console.web import PATH, Console, NavEntry
from adapter.http.audit_api import query_detail
from adapter.security.access import source_of
from adapter.security.roles import AUDIT_READERS, Principal, Role
from adapter.storage.db import transaction

READERS = frozenset(AUDIT_READERS)
NAV: list[NavEntry] = [("Audit search", f"{PATH}/audit", READERS),
                       ("Link opens", f"{PATH}/audit/links", READERS)]
PAGE_SIZE = 50
FILTERS = ("patient", "entity", "agent", "type", "action", "outcome", "date_from", "date_to")
KINDS = [kind.value for kind in Kind]
ACTIONS = [(action.value, action.name.lower()) for action in Action]
OUTCOMES = [("0", "success"), ("4", "minor failure"), ("8", "serious failure"), ("12", "major failure")]
MAX_EVENT_ID = 2**63 - 1


class FilterError(ValueError):
    """A filter the search cannot take; the message names it."""


def search_pairs(fields: dict[str, str]) -> list[tuple[str, str]]:
    """The API's search parameters for the console's filter form (blank fields are no filter)."""
    pairs: list[tuple[str, str]] = []
    for name in ("patient", "entity", "agent", "type", "action", "outcome"):
        value = fields.get(name, "").strip()
        if value:
            pairs.append((name, value))
    for name, prefix in (("date_from", "ge"), ("date_to", "le")):
        value = fields.get(name, "").strip()
        if value:
            pairs.append(("date", prefix + value))
    offset = fields.get("offset", "0").strip() or "0"
    if not offset.isdigit() or len(offset) > 9:
        raise FilterError("offset: not a page of this search")
    return [*pairs, ("_count", str(PAGE_SIZE)), ("_offset", offset)]


def row_view(row: AuditRow) -> dict[str, Any]:
    event = row.event
    return {"id": event.id, "seq": row.seq, "when": when_words(event.recorded_at), "kind": event.kind,
            "action": event.action, "outcome": event.outcome, "agent": agent_words(event.agent),
            "patient": event.patient_ref, "entity": event.entity_ref, "source": event.source,
            "words": describe(event), "detail": detail_of(event)}


def _accessed(principal: Principal, request: Request, op: str, pairs: list[tuple[str, str]],
              patient: str | None, entity: str = "AuditEvent") -> AuditEntry:
    return AuditEntry(Kind.AUDIT_ACCESS, Action.EXECUTE, agent=principal.agent, agent_role=principal.role.value,
                      source=source_of(request), patient_ref=patient, entity_ref=entity,
                      detail={"op": op, **query_detail(pairs)})


def router(console: Console) -> APIRouter:
    router = APIRouter(prefix=f"{PATH}/audit", include_in_schema=False)
    readers = console.require(*AUDIT_READERS)
    observer = console.settings.public_base_url if console.settings is not None else "bridge"

    def search_page(request: Request, principal: Principal, fields: dict[str, str], status: int = 200,
                    **found: Any) -> Response:
        return console.render(request, principal, "audit/search.html", status, fields=fields, kinds=KINDS,
                              actions=ACTIONS, outcomes=OUTCOMES, can_export=principal.role is Role.AUDITOR,
                              **found)

    @router.get("")
    async def get_search(request: Request, principal: Principal = Depends(readers)) -> Response:
        return search_page(request, principal, {})

    @router.post("/search")
    async def post_search(request: Request, principal: Principal = Depends(readers)) -> Response:
        fields = await console.form(request, principal)
        try:
            pairs = search_pairs(fields)
            query = parse_query(pairs)
        except (FilterError, AuditQueryError) as error:
            return search_page(request, principal, fields, 400, error=str(error))

        def run() -> tuple[list[dict[str, Any]], int]:
            with transaction(console.engine) as session:
                rows, total = search_audit(session, query)
                record(session, _accessed(principal, request, "search", pairs, fields.get("patient") or None))
                return [row_view(row) for row in rows], total

        rows, total = await asyncio.to_thread(run)
        offset = query.offset
        return search_page(request, principal, fields, rows=rows, total=total, offset=offset,
                           next_offset=offset + PAGE_SIZE if offset + PAGE_SIZE < total else None,
                           previous_offset=max(0, offset - PAGE_SIZE) if offset else None)

    @router.get("/events/{event_id}")
    async def get_event(event_id: str, request: Request, principal: Principal = Depends(readers)) -> Response:
        # Read as text: a number no row can have is a 404 page, not a validation error in JSON.
        number = int(event_id) if event_id.isascii() and event_id.isdigit() and len(event_id) <= 19 else 0

        def run() -> tuple[AuditEvent, int | None] | None:
            if not 1 <= number <= MAX_EVENT_ID:  # no row has such an id; SQLite cannot bind beyond 64 bits
                return None
            with transaction(console.engine) as session:
                found = session.exec(select(AuditEvent, AuditChain.seq).join(
                    AuditChain, col(AuditChain.event_id) == col(AuditEvent.id), isouter=True)
                    .where(col(AuditEvent.id) == number)).first()
                if found is None:
                    return None
                session.expunge(found[0])
                record(session, _accessed(principal, request, "read", [], found[0].patient_ref,
                                          f"AuditEvent/bridge-{number}"))
                return found[0], found[1]

        found = await asyncio.to_thread(run)
        if found is None:
            return console.error_page(request, 404, "No such record", "There is no audit record with this number.",
                                      principal)
        event, seq = found
        resource = to_audit_event(event, seq, source_observer=observer)
        return console.render(request, principal, "audit/event.html", event=row_view(AuditRow(event, seq, None)),
                              balp=json.dumps(resource, indent=2, ensure_ascii=False))

    @router.get("/links")
    async def get_links(request: Request, principal: Principal = Depends(readers)) -> Response:
        return console.render(request, principal, "audit/links.html", patient="", rows=None)

    @router.post("/links")
    async def post_links(request: Request, principal: Principal = Depends(readers)) -> Response:
        fields = await console.form(request, principal)
        patient = fields.get("patient", "").strip()
        pairs = [("patient", patient), ("type", Kind.LINK_ACCESS.value), ("_count", "1000")]
        try:
            query = parse_query(pairs)
        except AuditQueryError as error:
            return console.render(request, principal, "audit/links.html", 400, patient=patient, rows=None,
                                  error=str(error) if patient else "Enter a patient reference, e.g. Patient/123.")

        def run() -> tuple[list[dict[str, Any]], int]:
            with transaction(console.engine) as session:
                rows, total = search_audit(session, query)
                record(session, _accessed(principal, request, "link-access", pairs, patient))
                return [row_view(row) for row in rows], total

        rows, total = await asyncio.to_thread(run)
        opened = sum(1 for row in rows if row["detail"].get("outcome") == "opened")
        return console.render(request, principal, "audit/links.html", patient=patient, rows=rows, total=total,
                              opened=opened, success=Outcome.SUCCESS.value)

    return router
