"""The emulator's HTTP app: Meta's send endpoint plus operator endpoints under ``/_emulator/``.

``POST /{Version}/{Phone-Number-ID}/messages`` follows the Cloud API "Messages" reference: bearer token
(else 401, code 190), known phone number id (else Graph's code 100 / subcode 33), request validation
(:mod:`whatsapp.emulator.validation`), then ``{"messaging_product", "contacts": [{"input", "wa_id"}],
"messages": [{"id": "wamid…", "message_status": "accepted"}]}`` and status webhooks later. Free-form
messages outside the 24-hour window are accepted and then fail with 131047 by webhook, as on Cloud API.

The send route is a bare Starlette route (no pydantic, no dependency injection): it must take well over
1,000 requests/s on two cores.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import GraphError, invalid_token, unknown_object
from whatsapp.emulator.state import AcceptedMessage, EmulatorState, Fault
from whatsapp.emulator.validation import validate_send
from whatsapp.emulator.webhooks import WebhookDispatcher, envelope

_DROP = "emulator.drop_connection"
_JSON = "application/json"


class _EmulatorApp(FastAPI):
    """FastAPI, plus the one thing ASGI cannot express: closing the connection without an answer.

    The outermost ``send`` is the server's own (uvicorn's ``RequestResponseCycle.send``); its transport is
    closed when a handler marks the request with :data:`_DROP`.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        transport = getattr(getattr(send, "__self__", None), "transport", None)

        async def guarded_send(message: Message) -> None:
            if scope.get(_DROP) and transport is not None:
                if message["type"] == "http.response.start":
                    transport.close()
                    # Let connection_lost run, so the server sees a disconnect, not an app that forgot
                    # to answer (which it would log as an error and try to answer with a 500).
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                return
            await send(message)

        await super().__call__(scope, receive, guarded_send)


def _error_response(error: GraphError) -> Response:
    return Response(error.body(), status_code=error.status, media_type=_JSON,
                    headers={"WWW-Authenticate": "OAuth"} if error.status == 401 else None)


def create_emulator_app(config: EmulatorConfig) -> FastAPI:
    """Builds the emulator for ``config``; state lives in the app (``app.state.emulator``)."""
    catalogue = config.template_catalogue()
    state = EmulatorState(config.max_records)
    dispatcher = WebhookDispatcher(config, state)
    expected_auth = f"Bearer {config.access_token}".encode()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.close()

    app = _EmulatorApp(title="WhatsApp Cloud API emulator", lifespan=lifespan)
    app.state.emulator = state
    app.state.dispatcher = dispatcher

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = request.query_params.get("access_token")
        given = header.encode() if header else f"Bearer {token}".encode() if token else b""
        return hmac.compare_digest(given, expected_auth)

    async def accept(request: Request, fault: Fault | None) -> Response:
        if not authorised(request):
            return _error_response(invalid_token())
        phone_number_id = request.path_params["phone_number_id"]
        if phone_number_id not in config.phone_numbers:
            return _error_response(unknown_object(phone_number_id))
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return _error_response(GraphError(100, "Request body is not valid JSON"))
        try:
            valid = validate_send(payload, catalogue)
            throughput, pair = config.throughput_limit_per_second, config.pair_rate_limit_per_6s
            if throughput and state.throughput_limited(throughput):
                raise GraphError(130429, "Cloud API message throughput has been reached")
            if pair and state.pair_limited(valid.wa_id, pair):
                raise GraphError(131056, "Too many messages to this recipient in a short period")
        except GraphError as error:
            return _error_response(error)
        message = AcceptedMessage(
            message_id=state.next_wamid(), to=valid.to, wa_id=valid.wa_id, phone_number_id=phone_number_id,
            type=valid.type, accepted_at=time.time(), payload=payload,
        )
        state.record(message)
        fail_code = fault.fail_status_code if fault is not None else None
        if (fail_code is None and valid.free_form and config.enforce_service_window
                and not state.window_open(valid.wa_id, config.service_window_seconds)):
            fail_code = 131047
        dispatcher.schedule_statuses(message, category=valid.category, free_form=valid.free_form,
                                     callback=valid.biz_opaque_callback_data, fail_code=fail_code)
        body = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": valid.to, "wa_id": valid.wa_id}],
            "messages": [{"id": message.message_id, "message_status": "accepted"}],
        }
        return Response(json.dumps(body, separators=(",", ":")), media_type=_JSON)

    async def send_message(request: Request) -> Response:
        fault = state.next_fault()
        if fault is None:
            return await accept(request, None)
        if not fault.rejects:
            response = await accept(request, fault)
        else:
            error = fault.graph_error()
            response = _error_response(error) if error else Response(b"", status_code=fault.http_status)
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.drop_connection:
            request.scope[_DROP] = True
        return response

    app.add_route("/{version}/{phone_number_id}/messages", send_message, methods=["POST"])

    @app.get("/_emulator/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "accepted": len(state.messages), "queued_faults": len(state.faults),
                "pending_webhook_tasks": dispatcher.pending}

    @app.get("/_emulator/messages")
    async def list_messages(to: str | None = None) -> dict[str, Any]:
        digits = "".join(ch for ch in to if ch.isdigit()) if to else None
        found = [m.to_json() for m in state.messages.values() if digits is None or m.wa_id == digits]
        return {"messages": found}

    @app.delete("/_emulator/messages")
    async def reset() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    @app.post("/_emulator/faults")
    async def queue_faults(request: Request) -> JSONResponse:
        try:
            raw = json.loads(await request.body())
            faults = [Fault.from_json(item) for item in raw["responses"]]
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"expected {{'responses': [...]}}: {exc}"}, status_code=422)
        state.faults.extend(faults)
        return JSONResponse({"queued": len(state.faults)})

    @app.put("/_emulator/webhook")
    async def set_webhook_url(request: Request) -> JSONResponse:
        """Points status and inbound webhooks somewhere else (``{"url": …}``; ``null`` stops them)."""
        try:
            url = json.loads(await request.body())["url"]
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"expected {{'url': ...}}: {exc}"}, status_code=422)
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            return JSONResponse({"error": "url must be http(s) or null"}, status_code=422)
        dispatcher.webhook_url = url
        return JSONResponse({"url": url})

    @app.get("/_emulator/webhooks")
    async def list_webhooks(message_id: str | None = None) -> dict[str, Any]:
        found = [w for w in state.webhooks if message_id is None or w["message_id"] == message_id]
        return {"deliveries": found}

    @app.post("/_emulator/inbound")
    async def inbound(request: Request) -> JSONResponse:
        """Simulates the user writing or tapping a button; opens the 24-hour window for them."""
        try:
            raw = json.loads(await request.body())
            item, wa_id, phone_number_id = _inbound_item(raw, config, state.next_wamid())
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad inbound message: {exc}"}, status_code=422)
        state.last_inbound[wa_id] = time.monotonic()
        document = envelope(config, phone_number_id, {
            "contacts": [{"profile": {"name": str(raw.get("profile_name", "Test User"))}, "wa_id": wa_id}],
            "messages": [item],
        })
        record = await dispatcher.deliver(document, kind="message", label=item["type"], message_id=item["id"])
        return JSONResponse({"message_id": item["id"], "delivered": record["delivered"],
                             "attempts": record["attempts"]})

    return app


def _inbound_item(raw: dict[str, Any], config: EmulatorConfig, wamid: str) -> tuple[dict[str, Any], str, str]:
    wa_id = "".join(ch for ch in str(raw["from"]) if ch.isdigit())
    if not wa_id:
        raise ValueError("'from' has no digits")
    phone_number_id = str(raw.get("phone_number_id") or next(iter(config.phone_numbers)))
    item: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time()))}
    if "button" in raw:
        button = raw["button"]
        item.update(type="button",
                    button={"payload": str(button["payload"]), "text": str(button.get("text", ""))})
    elif "interactive_reply" in raw:
        reply = raw["interactive_reply"]
        item.update(type="interactive", interactive={
            "type": "button_reply",
            "button_reply": {"id": str(reply["id"]), "title": str(reply.get("title", ""))},
        })
    else:
        item.update(type="text", text={"body": str(raw["text"])})
    if raw.get("context"):
        item["context"] = {"from": config.phone_numbers.get(phone_number_id, ""), "id": str(raw["context"])}
    return item, wa_id, phone_number_id
