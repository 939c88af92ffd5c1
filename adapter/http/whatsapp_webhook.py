"""The WhatsApp webhook receiver: verification handshake, signature check, durable dedupe.

- ``GET``: Meta's verification request (``hub.mode=subscribe``, ``hub.verify_token``,
  ``hub.challenge``) — https://developers.facebook.com/docs/graph-api/webhooks/getting-started
- ``POST``: ``X-Hub-Signature-256`` is checked over the raw bytes before anything is parsed (any of
  the configured app secrets, so a secret can be rotated); then every status is stored once per
  (message id, status) and every inbound message once per id (its content encrypted), before the
  200 (:mod:`adapter.conversation.webhook_store`); the pipeline applies them afterwards
  (:mod:`adapter.outbox.statuses`, :mod:`adapter.conversation.inbound`).
  Template status changes update the template states at once (:mod:`adapter.outbox.templates`).
- A POST without a signature, or with one that matches no secret, is audited as a security alert
  (DICOM 110113 on export; outcome 8, agent ``meta`` as claimed, source = the client's address,
  reason ``signature-missing`` / ``signature-mismatch``) in its own small transaction. Neither the
  body nor the signature is stored: they are the attacker's input, and may carry anything.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.conversation.webhook_store import store_batch
from adapter.recipients.contacts import ContactBook
from adapter.storage.db import transaction
from whatsapp.signature import verify
from whatsapp.webhook import WebhookPayloadError, parse_webhook

MAX_WEBHOOK_BYTES = 1024 * 1024


def record_forged_webhook(engine: Engine, source: str | None, reason: str) -> None:
    """Audits a refused webhook: there is no other transaction to join, so it has its own."""
    with transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.SECURITY_ALERT, action=Action.EXECUTE, outcome=Outcome.SERIOUS_FAILURE,
                                   agent="meta", source=source, entity_ref="endpoint/whatsapp-webhook",
                                   detail={"reason": reason}))


def build_webhook_router(engine: Engine, app_secrets: Sequence[bytes], verify_token: str, contacts: ContactBook,
                         on_stored: Callable[[], None] | None = None) -> APIRouter:
    """``on_stored`` is called after new items were stored (the pipeline wakes up to apply them)."""
    app_secrets = [secret for secret in app_secrets if secret]
    if not app_secrets:
        raise ValueError("a WhatsApp app secret is required: webhooks are refused without one (fail closed)")
    router = APIRouter()

    @router.get("/whatsapp/webhook")
    async def verify_subscription(request: Request) -> Response:
        params = request.query_params
        token = params.get("hub.verify_token", "")
        if params.get("hub.mode") == "subscribe" and hmac.compare_digest(token.encode(), verify_token.encode()):
            return PlainTextResponse(params.get("hub.challenge", ""))
        return PlainTextResponse("forbidden", status_code=403)

    @router.post("/whatsapp/webhook")
    async def receive(request: Request) -> Response:
        signature = request.headers.get("x-hub-signature-256")
        source = request.client.host if request.client else None
        if not signature:
            await run_in_threadpool(record_forged_webhook, engine, source, "signature-missing")
            return JSONResponse({"error": "missing X-Hub-Signature-256"}, status_code=401)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_WEBHOOK_BYTES:
                return JSONResponse({"error": "body too large"}, status_code=413)
        if not verify(bytes(body), signature, app_secrets):
            await run_in_threadpool(record_forged_webhook, engine, source, "signature-mismatch")
            return JSONResponse({"error": "signature mismatch"}, status_code=403)
        try:
            batch = parse_webhook(bytes(body))
        except WebhookPayloadError:
            return JSONResponse({"error": "not a WhatsApp webhook payload"}, status_code=400)
        if await run_in_threadpool(store_batch, engine, batch, contacts) and on_stored is not None:
            on_stored()
        return JSONResponse({"status": "ok"})

    return router
