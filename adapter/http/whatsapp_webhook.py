"""The WhatsApp webhook receiver: verification handshake, signature check, durable dedupe.

- ``GET``: Meta's verification request (``hub.mode=subscribe``, ``hub.verify_token``,
  ``hub.challenge``) — https://developers.facebook.com/docs/graph-api/webhooks/getting-started
- ``POST``: ``X-Hub-Signature-256`` is checked over the raw bytes before anything is parsed (any of
  the configured app secrets, so a secret can be rotated); then every status is stored once per
  (message id, status) and every inbound message once per id (its content encrypted), before the
  200 (:mod:`adapter.conversation.webhook_store`); the pipeline applies them afterwards
  (:mod:`adapter.outbox.statuses`, :mod:`adapter.conversation.inbound`).
  Template status changes update the template states at once (:mod:`adapter.outbox.templates`).
- Signed is not the same as well-formed (a leaked secret, or a bug at Meta): the parser
  (:mod:`whatsapp.webhook`) returns only storable values — text without lone surrogates or NUL,
  bounded ids, timestamps within the 4-byte columns — and skips an unreadable item with a log line,
  so one bad item does not sink the good ones of its webhook (Meta retries every answer but 200,
  so a refused body would come back forever). Here, callback data that claims to name an outbox row
  (``outbox:<id>``) but names no id an outbox row can have is dropped before storing, so that status
  is matched by its message id alone. A body that is not a webhook at all (not JSON, nested too deeply,
  no item readable) is answered 400; one over 1 MiB, 413.
- Group commit (:mod:`adapter.http.group_commit`): webhooks that arrive together are stored in one
  transaction and each is answered 200 only after that commit. If the shared write fails, each
  webhook of the group is stored alone, so a bad one fails only itself. A webhook that could not be
  stored — the database unreachable, or that webhook's own write failing — is answered 503 with
  ``Retry-After``, like the EHR intake (:mod:`ehr.intake`): nothing is acknowledged that was not
  stored, and Meta sends it again.
- A POST without a signature, or with one that matches no secret, is audited as a security alert
  (DICOM 110113 on export; outcome 8, agent ``meta`` as claimed, source = the client's address,
  reason ``signature-missing`` / ``signature-mismatch``) in its own small transaction; the refusal
  stands if that audit cannot be written. Neither the body nor the signature is stored: they are the
  attacker's input, and may carry anything.

The POST route is a plain Starlette endpoint: no dependency resolution or response model per request.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.conversation.webhook_store import record_template_events, store_batch, store_batches
from adapter.http.group_commit import GroupCommit
from adapter.ops.metrics import timed_webhook
from adapter.outbox.encoding import CALLBACK_PREFIX, outbox_id_from_callback
from adapter.recipients.contacts import ContactBook
from adapter.security.refusal_budget import RefusalBudget, audit_entries
from adapter.storage.db import transaction
from whatsapp.signature import verify
from whatsapp.webhook import WebhookBatch, WebhookPayloadError, parse_webhook

MAX_WEBHOOK_BYTES = 1024 * 1024
OK = b'{"status":"ok"}'
RETRY_AFTER_SECONDS = "5"

log = logging.getLogger(__name__)


def record_forged_webhook(engine: Engine, source: str | None, reason: str,
                          budget: RefusalBudget | None = None) -> None:
    """Audits a refused webhook: there is no other transaction to join, so it has its own. The
    refusal stands whether or not it could be recorded (the database may be down). With a
    ``budget``, refusals beyond the first per source and minute are summarised
    (:mod:`adapter.security.refusal_budget`)."""
    refusal = AuditEntry(kind=Kind.SECURITY_ALERT, action=Action.EXECUTE, outcome=Outcome.SERIOUS_FAILURE,
                         agent="meta", source=source, entity_ref="endpoint/whatsapp-webhook",
                         detail={"reason": reason})
    entries = audit_entries(budget.admit(source, reason), refusal) if budget is not None else [refusal]
    if not entries:
        return
    try:
        with transaction(engine) as session:
            record(session, *entries)
    except SQLAlchemyError as error:
        log.warning("refused WhatsApp webhook (%s) could not be audited: %s", reason, type(error).__name__)


def names_an_outbox_row(callback: str | None) -> bool:
    """False for callback data in our ``outbox:<id>`` form whose id no outbox row can have (not ASCII
    digits, or beyond :data:`adapter.outbox.encoding.MAX_OUTBOX_ID`); True otherwise (ours and
    possible, or not ours at all)."""
    if callback is None or not callback.startswith(CALLBACK_PREFIX):
        return True
    return outbox_id_from_callback(callback) is not None


def without_impossible_callbacks(batch: WebhookBatch) -> WebhookBatch:
    """``batch`` with callback data that names no possible outbox row dropped (that status is then
    matched by its message id alone), so no lookup of such an id reaches the database."""
    if all(names_an_outbox_row(status.biz_opaque_callback_data) for status in batch.statuses):
        return batch
    statuses = []
    for status in batch.statuses:
        if not names_an_outbox_row(status.biz_opaque_callback_data):
            log.warning("webhook status callback data names no possible outbox row; ignored as unknown")
            status = dataclasses.replace(status, biz_opaque_callback_data=None)
        statuses.append(status)
    return dataclasses.replace(batch, statuses=statuses)


def store_group(engine: Engine, contacts: ContactBook) -> Callable[[Sequence[WebhookBatch]], list[int | Exception]]:
    """The group writer's ``write_many``: per webhook, how many items were new, or why it failed."""

    def write(batches: Sequence[WebhookBatch]) -> list[int | Exception]:
        outcomes: list[int | Exception]
        try:
            outcomes = list(store_batches(engine, list(batches), contacts))
        except OperationalError as error:  # unreachable or failing database: alone would fail the same
            return [error] * len(batches)
        except Exception as error:
            if len(batches) == 1:
                return [error]
            outcomes = []
        if not outcomes:  # the shared write failed: each alone, so one bad webhook fails only itself
            return [_alone(engine, batch, contacts) for batch in batches]
        for index, batch in enumerate(batches):
            if batch.template_statuses:
                try:
                    record_template_events(engine, batch)
                except Exception as error:
                    outcomes[index] = error
        return outcomes

    return write


def _alone(engine: Engine, batch: WebhookBatch, contacts: ContactBook) -> int | Exception:
    try:
        return store_batch(engine, batch, contacts)
    except Exception as error:
        return error


def build_webhook_router(engine: Engine, app_secrets: Sequence[bytes], verify_token: str, contacts: ContactBook,
                         on_stored: Callable[[], None] | None = None) -> APIRouter:
    """``on_stored`` is called after new items were stored (the pipeline wakes up to apply them). The
    router's lifespan starts and stops the group writer with the app that includes it."""
    app_secrets = [secret for secret in app_secrets if secret]
    if not app_secrets:
        raise ValueError("a WhatsApp app secret is required: webhooks are refused without one (fail closed)")
    writer: GroupCommit[WebhookBatch, int] = GroupCommit(store_group(engine, contacts))
    refusals = RefusalBudget()
    router = APIRouter(lifespan=writer.lifespan)

    @router.get("/whatsapp/webhook")
    async def verify_subscription(request: Request) -> Response:
        params = request.query_params
        token = params.get("hub.verify_token", "")
        if params.get("hub.mode") == "subscribe" and hmac.compare_digest(token.encode(), verify_token.encode()):
            return PlainTextResponse(params.get("hub.challenge", ""))
        return PlainTextResponse("forbidden", status_code=403)

    async def receive(request: Request) -> Response:
        signature = request.headers.get("x-hub-signature-256")
        source = request.client.host if request.client else None
        if not signature:
            await run_in_threadpool(record_forged_webhook, engine, source, "signature-missing", refusals)
            return JSONResponse({"error": "missing X-Hub-Signature-256"}, status_code=401)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_WEBHOOK_BYTES:
                return JSONResponse({"error": "body too large"}, status_code=413)
        raw = bytes(body)
        if not verify(raw, signature, app_secrets):
            await run_in_threadpool(record_forged_webhook, engine, source, "signature-mismatch", refusals)
            return JSONResponse({"error": "signature mismatch"}, status_code=403)
        try:
            batch = without_impossible_callbacks(parse_webhook(raw))
        except WebhookPayloadError as error:  # its message says where, never what the body held
            return JSONResponse({"error": f"not a WhatsApp webhook payload: {error}"}, status_code=400)
        try:
            stored = await writer.submit(batch)
        except Exception as error:
            # Not stored, so not acknowledged: Meta sends it again. SQL errors quote the statement's
            # parameters, so only their class is logged; anything else is a bug and gets its traceback.
            log.error("WhatsApp webhook not stored, answered 503: %s", type(error).__name__,
                      exc_info=not isinstance(error, SQLAlchemyError))
            return JSONResponse({"error": "the webhook could not be stored now; retry later"}, status_code=503,
                                headers={"Retry-After": RETRY_AFTER_SECONDS})
        if stored and on_stored is not None:
            on_stored()
        return Response(OK, media_type="application/json")

    router.add_route("/whatsapp/webhook", timed_webhook(receive), methods=["POST"])  # intake latency metric
    return router
