"""The emulator's HTTP app: Meta's send endpoint, template management, and operator endpoints.

``POST /{Version}/{Phone-Number-ID}/messages`` follows the Cloud API "Messages" reference (and facebook/openapi
``business-messaging-api_v23.0.yaml``): bearer token (else 401, code 190), known phone number id (else Graph's
code 100 / subcode 33), request validation (:mod:`whatsapp.emulator.validation`, templates checked against
the registry's statuses), the throughput and pair-rate buckets (:mod:`whatsapp.emulator.limits`: 130429,
131056), then ``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id": "wamid…",
"message_status": "accepted"}]}`` and status webhooks later. Free-form messages outside the 24-hour window
(measured on the virtual clock from the user's last message) are accepted and then fail with 131047 by
webhook, as on Cloud API. Every refused send is remembered (``GET /_emulator/rejections``).

The send route is a bare Starlette route (no pydantic, no dependency injection): it must take well over
1,000 requests/s on two cores. Template management is in :mod:`whatsapp.emulator.management`, the operator
endpoints under ``/_emulator/`` in :mod:`whatsapp.emulator.operator`, the patient's phone page in
:mod:`whatsapp.emulator.phone`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Message, Receive, Scope, Send

from whatsapp.emulator.clock import VirtualClock
from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import DETAILS, GraphError, invalid_token, unknown_object
from whatsapp.emulator.graph_http import JSON, bearer_check, error_response
from whatsapp.emulator.management import add_management_routes
from whatsapp.emulator.operator import add_operator_routes
from whatsapp.emulator.payloads import template_status_document
from whatsapp.emulator.phone import add_phone_routes
from whatsapp.emulator.state import AcceptedMessage, EmulatorState, Fault
from whatsapp.emulator.templates import TemplateRecord, TemplateRegistry
from whatsapp.emulator.tunables import Tunables
from whatsapp.emulator.validation import validate_send
from whatsapp.emulator.webhooks import WebhookDispatcher

_DROP = "emulator.drop_connection"


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


def create_emulator_app(config: EmulatorConfig) -> FastAPI:
    """Builds the emulator for ``config``; state lives in the app (``app.state.emulator``)."""
    clock = VirtualClock()
    tunables = Tunables.from_config(config)
    state = EmulatorState(config.max_records, tunables, clock)
    registry = TemplateRegistry(config.template_catalogue(), clock.now)
    dispatcher = WebhookDispatcher(config, state)
    authorised = bearer_check(config)
    limiter = state.limiter

    def template_status_changed(record: TemplateRecord, event: str, reason: str | None) -> None:
        document = template_status_document(config, record.to_json(("name", "language", "category")), event,
                                            clock.now(), reason)
        dispatcher.spawn(dispatcher.deliver(document, kind="template_status", label=event, message_id=record.id))

    registry.on_status_change = template_status_changed

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
    app.state.templates = registry

    def refuse(error: GraphError, phone_number_id: str, payload: Any, injected: bool = False) -> Response:
        state.reject(code=error.code, subcode=error.subcode, http_status=error.status, details=error.details,
                     phone_number_id=phone_number_id, payload=payload, injected=injected)
        return error_response(error)

    async def accept(request: Request, fault: Fault | None) -> Response:
        phone_number_id = request.path_params["phone_number_id"]
        if not authorised(request):
            return refuse(invalid_token(), phone_number_id, None)
        if phone_number_id not in config.phone_numbers:
            return refuse(unknown_object(phone_number_id), phone_number_id, None)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return refuse(GraphError(100, "Request body is not valid JSON"), phone_number_id, None)
        try:
            valid = validate_send(payload, registry)
            throughput, per_6s = tunables.throughput_limit_per_second, tunables.pair_rate_limit_per_6s
            slack = tunables.rate_limit_tolerance_seconds
            if throughput and not limiter.throughput_ok(phone_number_id, throughput, slack):
                raise GraphError(130429, DETAILS[130429])
            if per_6s and not limiter.pair_ok(phone_number_id, valid.wa_id, per_6s, tunables.pair_rate_burst, slack):
                raise GraphError(131056, DETAILS[131056])
        except GraphError as error:
            return refuse(error, phone_number_id, payload)
        now = clock.now()
        message = AcceptedMessage(
            message_id=state.next_wamid(), to=valid.to, wa_id=valid.wa_id, phone_number_id=phone_number_id,
            type=valid.type, accepted_at=now, payload=payload,
        )
        state.record(message)
        fail_code = fault.fail_status_code if fault is not None else None
        if (fail_code is None and valid.free_form and tunables.enforce_service_window
                and not state.window_open(valid.wa_id, tunables.service_window_seconds)):
            fail_code = 131047
        dispatcher.schedule_statuses(message, category=valid.category, free_form=valid.free_form,
                                     callback=valid.biz_opaque_callback_data, fail_code=fail_code)
        body = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": valid.to, "wa_id": valid.wa_id}],
            "messages": [{"id": message.message_id, "message_status": "accepted"}],
        }
        return Response(json.dumps(body, separators=(",", ":")), media_type=JSON)

    async def injected_refusal(request: Request, fault: Fault) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        phone_number_id = request.path_params["phone_number_id"]
        error = fault.graph_error()
        if error is not None:
            return refuse(error, phone_number_id, payload, injected=True)
        state.reject(code=None, http_status=fault.http_status, phone_number_id=phone_number_id, payload=payload,
                     injected=True)
        return Response(b"", status_code=fault.http_status)

    async def send_message(request: Request) -> Response:
        fault = state.next_fault()
        if fault is None:
            return await accept(request, None)
        response = await (injected_refusal(request, fault) if fault.rejects else accept(request, fault))
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.drop_connection:
            request.scope[_DROP] = True
        return response

    app.add_route("/{version}/{phone_number_id}/messages", send_message, methods=["POST"])
    add_management_routes(app, config, registry, authorised, dispatcher.spawn)
    add_operator_routes(app, config, state, dispatcher, registry)
    add_phone_routes(app, config, state, dispatcher, registry)  # the patient's phone page (test tool)
    return app
