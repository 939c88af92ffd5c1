"""Operator endpoints under ``/_emulator/``: what a test or a demo uses to look inside and to steer.

=============================================  ===================================================================
``GET /_emulator/health``                      counts, pending webhook tasks, the virtual clock
``GET /_emulator/messages?to=&type=&status=``  accepted messages: ``accepted_at`` (virtual), ``status``,
                                               ``statuses``, ``status_history`` [{status, timestamp}], ``errors``
``DELETE /_emulator/messages``                 forget messages, rejections, faults, webhooks, windows and rate
                                               buckets; ``?clock=1`` also resets the clock, ``?templates=1`` the
                                               template registry (to the shipped catalogue)
``GET /_emulator/rejections?code=&to=``        refused sends: ``at`` (virtual), ``code``, ``http_status``, …
``POST /_emulator/faults``                     ``{"responses": [fault, …]}`` for the next sends
``PUT /_emulator/webhook``                     ``{"url": … | null}``
``GET /_emulator/webhooks?message_id=&kind=``  deliveries (``kind``: status, message, template_status)
``POST /_emulator/inbound``                    a user's message, tap or number change (:mod:`.inbound`)
``GET|POST /_emulator/clock``                  ``{"advance_seconds": N}`` moves the virtual clock forward
``GET|PATCH /_emulator/config``                run-time settings (:mod:`.tunables`); unknown keys → 422
``POST /_emulator/templates/status``           ``{"name", "language", "status", "reason"?}``: sets a template's
                                               status and sends ``message_template_status_update``
``GET /_emulator/templates``                   the registry, every status, without auth
=============================================  ===================================================================
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.inbound import build_inbound
from whatsapp.emulator.payloads import envelope
from whatsapp.emulator.state import EmulatorState, Fault
from whatsapp.emulator.templates import STATUSES, TemplateRegistry
from whatsapp.emulator.tunables import TunablesError
from whatsapp.emulator.webhooks import WebhookDispatcher


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _problem(message: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> Any:
    return json.loads(await request.body())


def add_operator_routes(app: FastAPI, config: EmulatorConfig, state: EmulatorState,
                        dispatcher: WebhookDispatcher, registry: TemplateRegistry) -> None:
    tunables = state.tunables
    clock = state.clock

    def effective_config() -> dict[str, Any]:
        return {**tunables.to_json(), "waba_id": config.waba_id, "phone_numbers": dict(config.phone_numbers),
                "webhook_url": dispatcher.webhook_url, "webhook_retry": asdict(config.webhook_retry),
                "max_records": config.max_records}

    @app.get("/_emulator/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "accepted": len(state.messages), "rejected": len(state.rejections),
                "queued_faults": len(state.faults), "pending_webhook_tasks": dispatcher.pending,
                "clock": clock.to_json()}

    @app.get("/_emulator/messages")
    async def list_messages(request: Request) -> dict[str, Any]:
        query = request.query_params
        digits = _digits(query["to"]) if query.get("to") else None
        kind, status = query.get("type"), query.get("status")
        found = [m.to_json() for m in state.messages.values()
                 if (digits is None or m.wa_id == digits) and (kind is None or m.type == kind)
                 and (status is None or m.status == status)]
        return {"messages": found}

    @app.delete("/_emulator/messages")
    async def reset(request: Request) -> dict[str, Any]:
        state.reset(clock=_flag(request.query_params.get("clock")))
        if _flag(request.query_params.get("templates")):
            registry.reset()
        return {"status": "reset", "clock": clock.to_json()}

    @app.get("/_emulator/rejections")
    async def rejections(request: Request) -> dict[str, Any]:
        query = request.query_params
        code = query.get("code")
        digits = _digits(query["to"]) if query.get("to") else None
        found = [r for r in state.rejections
                 if (code is None or str(r["code"]) == code) and (digits is None or r["wa_id"] == digits)]
        return {"rejections": found}

    @app.post("/_emulator/faults")
    async def queue_faults(request: Request) -> JSONResponse:
        try:
            faults = [Fault.from_json(item) for item in (await _json(request))["responses"]]
        except (ValueError, KeyError, TypeError) as exc:
            return _problem(f"expected {{'responses': [...]}}: {exc}")
        state.faults.extend(faults)
        return JSONResponse({"queued": len(state.faults)})

    @app.put("/_emulator/webhook")
    async def set_webhook_url(request: Request) -> JSONResponse:
        """Points status and inbound webhooks somewhere else (``{"url": …}``; ``null`` stops them)."""
        try:
            url = (await _json(request))["url"]
        except (ValueError, KeyError, TypeError) as exc:
            return _problem(f"expected {{'url': ...}}: {exc}")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            return _problem("url must be http(s) or null")
        dispatcher.webhook_url = url
        return JSONResponse({"url": url})

    @app.get("/_emulator/webhooks")
    async def list_webhooks(request: Request) -> dict[str, Any]:
        message_id, kind = request.query_params.get("message_id"), request.query_params.get("kind")
        found = [w for w in state.webhooks
                 if (message_id is None or message_id in w["message_ids"]) and (kind is None or w["kind"] == kind)]
        return {"deliveries": found}

    @app.post("/_emulator/inbound")
    async def inbound(request: Request) -> JSONResponse:
        """Simulates the user writing or tapping; a user's message opens the 24-hour window for them."""
        try:
            message = build_inbound(await _json(request), config, state.next_wamid(), clock.now(),
                                    tunables.bsuid_enabled)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _problem(f"bad inbound message: {exc}")
        if message.opens_window:
            for key in (message.wa_id, message.user_id):
                if key:
                    state.open_window(key, message.timestamp)
        document = envelope(config, message.phone_number_id, message.value)
        record = await dispatcher.deliver(document, kind="message", label=message.type,
                                          message_id=message.message_id)
        return JSONResponse({"message_id": message.message_id, "type": message.type, "wa_id": message.wa_id,
                             "user_id": message.user_id, "timestamp": message.timestamp,
                             "delivered": record["delivered"], "attempts": record["attempts"]})

    @app.get("/_emulator/clock")
    async def get_clock() -> dict[str, float]:
        return clock.to_json()

    @app.post("/_emulator/clock")
    async def advance_clock(request: Request) -> JSONResponse:
        try:
            seconds = (await _json(request))["advance_seconds"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError("advance_seconds must be a number")
            clock.advance(seconds)
        except (ValueError, KeyError, TypeError) as exc:
            return _problem(f"expected {{'advance_seconds': N >= 0}}: {exc}")
        registry.settle_all()  # reviews that came due
        return JSONResponse(clock.to_json())

    @app.get("/_emulator/config")
    async def get_config() -> dict[str, Any]:
        return effective_config()

    @app.patch("/_emulator/config")
    async def patch_config(request: Request) -> JSONResponse:
        try:
            tunables.apply(await _json(request))
        except (ValueError, TunablesError) as exc:
            return _problem(str(exc))
        return JSONResponse(effective_config())

    @app.get("/_emulator/templates")
    async def list_templates() -> dict[str, Any]:
        return {"templates": [r.to_json() for r in registry.find()]}

    @app.post("/_emulator/templates/status")
    async def set_template_status(request: Request) -> JSONResponse:
        try:
            raw = await _json(request)
            name, language, status = str(raw["name"]), str(raw["language"]), str(raw["status"]).upper()
            reason = raw.get("reason")
        except (ValueError, KeyError, TypeError) as exc:
            return _problem(f"expected {{'name', 'language', 'status', 'reason'?}}: {exc}")
        if status not in STATUSES:
            return _problem(f"status must be one of {', '.join(sorted(STATUSES))}")
        record = registry.record(name, language)
        if record is None:
            return _problem(f"no template {name} in {language}", status=404)
        registry.set_status(record, status, str(reason) if reason is not None else None)
        return JSONResponse({"template": record.to_json(), "event": status})
