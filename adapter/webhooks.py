"""The WhatsApp webhook receiver: verification handshake, signature check, durable dedupe.

- ``GET``: Meta's verification request (``hub.mode=subscribe``, ``hub.verify_token``,
  ``hub.challenge``) — https://developers.facebook.com/docs/graph-api/webhooks/getting-started
- ``POST``: ``X-Hub-Signature-256`` is checked over the raw bytes before anything is parsed;
  then every status is stored once per (message id, status) and applied to the outbox
  monotonically (sent < delivered < read, whatever order they arrive in); inbound message ids are
  stored once, without their content (handled by later features).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from adapter.db import insert_ignoring_duplicates, transaction, utcnow
from adapter.models import InboundMessage, OutboxMessage, WhatsAppStatus
from adapter.outbox import OutboxStore, outbox_id_from_callback
from whatsapp.signature import verify
from whatsapp.webhook import StatusEvent, WebhookBatch, WebhookPayloadError, parse_webhook

MAX_WEBHOOK_BYTES = 1024 * 1024
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}


def apply_batch(engine: Engine, batch: WebhookBatch) -> int:
    """Stores and applies a webhook batch in one transaction; returns how many items were new."""
    now = utcnow()
    with transaction(engine) as session:
        status_rows = [
            {"dedupe_key": f"{s.message_id}:{s.status}", "wamid": s.message_id, "status": s.status,
             "meta_timestamp": s.timestamp, "callback_data": s.biz_opaque_callback_data,
             "error_code": s.errors[0].code if s.errors else None,
             "pricing": json.dumps(s.pricing) if s.pricing else None, "received_at": now}
            for s in batch.statuses
        ]
        new_statuses = insert_ignoring_duplicates(session, WhatsAppStatus, status_rows, "dedupe_key")
        message_rows = [
            {"wamid": m.message_id, "message_type": m.type, "meta_timestamp": m.timestamp,
             "received_at": now, "state": "pending"}
            for m in batch.messages
        ]
        new_messages = insert_ignoring_duplicates(session, InboundMessage, message_rows, "wamid")
        for status in batch.statuses:
            _apply_status(session, status)
    return new_statuses + new_messages


def _apply_status(session: Session, status: StatusEvent) -> None:
    row = None
    callback_id = outbox_id_from_callback(status.biz_opaque_callback_data)
    if callback_id is not None:
        row = session.get(OutboxMessage, callback_id)
        if row is not None:
            OutboxStore.settle_by_status(row, status.message_id)
    if row is None or row.wamid != status.message_id:
        row = session.exec(select(OutboxMessage).where(col(OutboxMessage.wamid) == status.message_id)).first()
    if row is None:
        return
    current = STATUS_RANK.get(row.delivery_status or "", 0)
    if status.status == "failed":
        if current < STATUS_RANK["delivered"]:
            row.delivery_status, row.delivery_status_ts = "failed", status.timestamp
            row.last_error_code = status.errors[0].code if status.errors else None
    elif STATUS_RANK.get(status.status, 0) > current:
        row.delivery_status, row.delivery_status_ts = status.status, status.timestamp
    session.add(row)


def build_webhook_router(engine: Engine, app_secrets: Sequence[bytes],
                         verify_token: str) -> APIRouter:
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
        if not signature:
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
            return JSONResponse({"error": "signature mismatch"}, status_code=403)
        try:
            batch = parse_webhook(bytes(body))
        except WebhookPayloadError:
            return JSONResponse({"error": "not a WhatsApp webhook payload"}, status_code=400)
        await run_in_threadpool(apply_batch, engine, batch)
        return JSONResponse({"status": "ok"})

    return router
