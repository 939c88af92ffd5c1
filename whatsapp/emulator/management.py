"""Template management over the Graph API: ``GET|POST /{Version}/{WABA-ID}/message_templates``.

Follows Meta's "Message Templates" reference (WhatsApp Business Account) and "Template management":

* ``GET`` lists the account's templates, default fields ``name``, ``parameter_format``, ``components``,
  ``language``, ``status``, ``category``, ``id`` (``fields=`` picks others), filtered by ``name`` (part of
  a name), ``status`` (one or several, comma-separated), ``language`` and ``category``; ``limit`` (default
  25) and the ``after``/``before`` cursors page through it: ``{"data": [...], "paging": {"cursors":
  {"before", "after"}, "next"?, "previous"?}}``.
* ``POST`` with ``{name, language, category, components, parameter_format?}`` answers ``{"id", "status",
  "category"}``: ``PENDING`` while in review (``template_review_seconds`` of virtual time), else
  ``APPROVED``; the status update webhook follows approval.

Same bearer token as the send endpoint; an unknown WABA id is Graph's code 100 / subcode 33.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import GraphError, invalid_token, unknown_object
from whatsapp.emulator.graph_http import error_response
from whatsapp.emulator.templates import DEFAULT_FIELDS, TemplateRegistry, cursor, page

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000


def add_management_routes(app: FastAPI, config: EmulatorConfig, registry: TemplateRegistry,
                          authorised: Callable[[Request], bool],
                          spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    def check(request: Request) -> GraphError | None:
        if not authorised(request):
            return invalid_token()
        waba_id = request.path_params["waba_id"]
        if waba_id != config.waba_id:
            return unknown_object(waba_id)
        return None

    async def list_templates(request: Request) -> Response:
        error = check(request)
        if error is not None:
            return error_response(error)
        query = request.query_params
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            return error_response(GraphError(100, f"Param limit must be an integer from 1 to {MAX_LIMIT}"))
        wanted = tuple(f.strip() for f in query["fields"].split(",")) if query.get("fields") else DEFAULT_FIELDS
        found = registry.find(name=query.get("name"), status=query.get("status"), language=query.get("language"),
                              category=query.get("category"))
        try:
            chosen, more_after, more_before = page(found, limit=limit, after=query.get("after"),
                                                   before=query.get("before"))
        except GraphError as exc:
            return error_response(exc)
        body: dict[str, Any] = {"data": [record.to_json(wanted) for record in chosen]}
        if chosen:
            first, last = cursor(chosen[0].id), cursor(chosen[-1].id)
            paging: dict[str, Any] = {"cursors": {"before": first, "after": last}}
            base = str(request.url.remove_query_params(["after", "before"]))
            if more_after:
                paging["next"] = f"{base}{'&' if '?' in base else '?'}after={last}"
            if more_before:
                paging["previous"] = f"{base}{'&' if '?' in base else '?'}before={first}"
            body["paging"] = paging
        return JSONResponse(body)

    async def create_template(request: Request) -> Response:
        error = check(request)
        if error is not None:
            return error_response(error)
        try:
            raw = json.loads(await request.body())
        except ValueError:
            return error_response(GraphError(100, "Request body is not valid JSON"))
        review = float(app.state.emulator.tunables.template_review_seconds)
        try:
            record = registry.create(raw, review)
        except GraphError as exc:
            return error_response(exc)
        if record.approve_at is not None:
            spawn(_approve_later(registry, review))
        return JSONResponse({"id": record.id, "status": record.status, "category": record.category})

    app.add_route("/{version}/{waba_id}/message_templates", list_templates, methods=["GET"])
    app.add_route("/{version}/{waba_id}/message_templates", create_template, methods=["POST"])


async def _approve_later(registry: TemplateRegistry, seconds: float) -> None:
    """The virtual clock runs at real speed between jumps: after ``seconds`` the review is due."""
    await asyncio.sleep(seconds)
    registry.settle_all()
