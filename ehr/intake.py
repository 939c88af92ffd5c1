"""The HTTP endpoint the EHR notifies: ``/ehr/notify/{key}`` for rest-hook Subscriptions.

Serves the rest-hook channel of https://hl7.org/fhir/R4/subscription.html#2.46.7: ``POST
{endpoint}`` (ping, resource or Bundle) and ``PUT``/``POST {endpoint}/{type}/{id}`` (servers that
deliver the resource as an update to the endpoint used as a base URL). Request handling, in order:

1. unknown key → 404; no ``Authorization`` → 401; wrong per-key secret → 403
   (:mod:`ehr.hook_secrets`). All before a byte of the body is read. A 401 or 403 is reported to
   ``on_refused`` (the service records a DICOM 110113 security alert; see ``InboxStore.refused``).
   A key in ``signed_keys`` is authenticated Medplum's way instead: no ``X-Signature`` → 401 (before
   the body is read); a signature that is not HMAC-SHA256 of the body read → 403, reported alike.
2. ``Content-Length`` over the cap → 413, and the streamed body is capped as it arrives (a
   chunked request cannot get around it).
3. :func:`ehr.intake_parsing.parse_notification` turns the body into references or rejects the
   whole request (400/415/422): nothing is stored unless everything is valid. A reference whose id
   or version is not a FHIR id (:func:`ehr.notifications.is_fhir_id`: the id grammar, and not ``.``
   or ``..``) is refused with 400: it names no resource, so re-reading it could only fail, and the
   pipeline would retry it as if the EHR were down. An empty JSON object ``{}`` is what Medplum posts
   for a deleted resource, naming it in ``X-Medplum-Deleted-Resource: {type}/{id}``
   (https://www.medplum.com/docs/subscriptions/subscription-extensions, "Interactions"): it is read
   as a notification of that resource (re-read, the pipeline finds it gone), or as a ping when the
   header is absent or names nothing this endpoint handles.
4. The references go to the :class:`~ehr.notifications.NotificationSink` (in a worker thread,
   sinks are synchronous database code); only after it returned is 200 sent. A failing sink → 503
   so the EHR retries (at-least-once in; the inbox dedupes).

Every answer is an OperationOutcome (https://hl7.org/fhir/R4/operationoutcome.html) with a
PHI-free text. The body is never logged or stored. Each answer's status and latency go to the observers
of :func:`observe_intake` (the service's metrics).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ehr.backport_events import BackportStatus
from ehr.hook_secrets import SIGNATURE_HEADER, derive_secret, verify_header, verify_signature
from ehr.intake_parsing import DEFAULT_SUPPORTED_TYPES, NotificationRejected, parse_with_status
from ehr.notifications import IncomingNotification, NotificationSink, is_fhir_id

NOTIFY_PREFIX = "/ehr/notify"
FHIR_JSON = "application/fhir+json"
# Parsing a large Bundle takes milliseconds of CPU; off the event loop it cannot stall other requests.
_PARSE_IN_THREAD_BYTES = 256 * 1024
_SINK_RETRY_AFTER_SECONDS = "5"
# RFC 9110 section 11.6.1: a 401 names a scheme; Medplum's signature has no registered one.
_SIGNED_REALM = 'X-Signature realm="ehr-notify"'
DELETED_HEADER = "X-Medplum-Deleted-Resource"
_EMPTY_OBJECT = re.compile(rb"\s*\{\s*\}\s*")
_DELETED_REF = re.compile(r"([A-Z][A-Za-z]{1,63})/([^/]+)")

logger = logging.getLogger(__name__)
IntakeObserver = Callable[[int, float], None]  # (HTTP status answered, seconds from request to answer)
_observers: list[IntakeObserver] = []


def observe_intake(observer: IntakeObserver) -> None:
    """Calls ``observer`` after every notification answered by any intake router of this process (once per
    observer), like :func:`ehr.transport.observe_calls` for the FHIR calls."""
    if observer not in _observers:
        _observers.append(observer)

# The body is read raw (capped, then parsed), so FastAPI cannot document it: stated here for the OpenAPI
# document. The per-key secret goes in ``Authorization: Bearer`` (the Subscription's channel.header), or
# Medplum signs the body (``X-Signature``); the security schemes are declared by the app.
_OUTCOME_DOC = {"content": {FHIR_JSON: {"schema": {"type": "object"}}}}
_STATUS_TEXT = {200: "Stored or acknowledged", 400: "Malformed notification", 401: "No secret or signature",
                403: "Wrong secret or signature", 404: "No endpoint with this key", 413: "Body over the cap",
                415: "Not FHIR JSON", 422: "Not a notification the bridge handles",
                503: "Not stored; retry (Retry-After)"}
_OPENAPI_DOC: dict[str, object] = {
    "description": "Receives a rest-hook notification from the EHR (a FHIR resource, Bundle or an empty ping) "
                   "and stores the references it names. Answers an OperationOutcome.",
    "requestBody": {"required": False, "description": "A FHIR resource or Bundle, or empty (a ping).",
                    "content": {FHIR_JSON: {"schema": {"type": "object"}}}},
    "responses": {str(status): {"description": f"{text}: an OperationOutcome", **_OUTCOME_DOC}
                  for status, text in _STATUS_TEXT.items()},
    "security": [{"ehrNotifySecret": []}, {"medplumSignature": []}],
}


def build_intake_router(
    sink: NotificationSink,
    master_secret: bytes,
    known_keys: Collection[str],
    max_body_bytes: int,
    supported_types: frozenset[str] = DEFAULT_SUPPORTED_TYPES,
    on_refused: Callable[[str, str, str | None], None] | None = None,
    on_backport: Callable[[str, BackportStatus], None] | None = None,
    store: Callable[[list[IncomingNotification]], Awaitable[int]] | None = None,
    signed_keys: Collection[str] = (),
) -> APIRouter:
    """A router serving ``/ehr/notify/{key}`` and ``/ehr/notify/{key}/{type}/{id}`` for the
    subscription keys in ``known_keys`` (their secrets are derived from ``master_secret``).
    ``on_refused(key, reason, client address)``: called (in a worker thread) for a missing or wrong
    secret, ``reason`` being ``missing_secret`` or ``wrong_secret``; it must not raise.
    ``on_backport(key, status)``: called (in a worker thread) for every accepted topic-based
    notification (handshake, heartbeat, event notification; Subscriptions Backport IG) once its
    items are stored, so the feed monitor can follow event numbers and heartbeats.
    ``store``: how the items reach the sink, if not by ``sink.accept`` in a worker thread (the service
    passes a group commit, so concurrent notifications share one transaction); it returns how many
    were new once they are durable, or raises.
    ``signed_keys``: the keys (among ``known_keys``) whose Subscriptions carry Medplum's secret
    extension; their notifications must carry ``X-Signature`` instead of the ``Authorization`` header."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    expected_secrets = {key: derive_secret(master_secret, key) for key in known_keys}
    signed = frozenset(signed_keys) & expected_secrets.keys()
    router = APIRouter(prefix=NOTIFY_PREFIX, tags=["ehr"])

    async def _refused(key: str, reason: str, request: Request) -> None:
        if on_refused is None:
            return
        client = request.client.host if request.client is not None else None
        try:
            await run_in_threadpool(on_refused, key, reason, client)
        except Exception:  # the refusal stands whether or not it could be recorded
            logger.exception("EHR notification on %s refused (%s); recording the alert failed", key, reason)

    async def authenticate(request: Request, key: str, expected: str) -> Response | None:
        """The refusal for a missing or wrong ``Authorization`` secret, or a missing signature."""
        if key in signed:
            if request.headers.get(SIGNATURE_HEADER) is not None:
                return None  # checked once the body is read
            await _refused(key, "missing_secret", request)
            return outcome(401, "login", "X-Signature header missing; set the Subscription's Medplum "
                           "subscription-secret extension.", headers={"WWW-Authenticate": _SIGNED_REALM})
        header = request.headers.get("authorization")
        if header is None:
            await _refused(key, "missing_secret", request)
            return outcome(401, "login", "Authorization header missing; configure the Subscription's "
                           "channel.header.", headers={"WWW-Authenticate": 'Bearer realm="ehr-notify"'})
        if not verify_header(header, expected):
            await _refused(key, "wrong_secret", request)
            return outcome(403, "forbidden", "The notification secret is wrong for this endpoint.")
        return None

    async def handle(request: Request, key: str, url_type: str | None, url_id: str | None) -> Response:
        started = time.perf_counter()
        response = await answer(request, key, url_type, url_id)
        for observer in _observers:
            observer(response.status_code, time.perf_counter() - started)
        return response

    async def answer(request: Request, key: str, url_type: str | None, url_id: str | None) -> Response:
        expected = expected_secrets.get(key)
        if expected is None:
            return outcome(404, "not-found", "No notification endpoint with this key.")
        refusal = await authenticate(request, key, expected)
        if refusal is not None:
            return refusal
        try:
            body = await _read_capped(request, max_body_bytes)
        except NotificationRejected as rejected:
            return _rejected(key, rejected)
        # Constant time; a body altered after signing fails like a wrong secret.
        if key in signed and not verify_signature(request.headers.get(SIGNATURE_HEADER), body, expected):
            await _refused(key, "wrong_secret", request)
            return outcome(403, "forbidden", "The notification signature is wrong for this endpoint.")
        if _EMPTY_OBJECT.fullmatch(body):  # Medplum's delete (or expiry): no resource to parse
            body, url_type, url_id = b"", *_deleted(request, url_type, url_id, supported_types)
        try:
            _check_content_type(request, body)
            parse = functools.partial(parse_with_status, body, key=key, url_type=url_type, url_id=url_id,
                                      supported_types=supported_types)
            items, status = await run_in_threadpool(parse) if len(body) > _PARSE_IN_THREAD_BYTES else parse()
            _check_ids(items)
        except NotificationRejected as rejected:
            return _rejected(key, rejected)
        response = await _store(store or _in_thread(sink), key, items)
        if status is not None and on_backport is not None and response.status_code == 200:
            try:
                await run_in_threadpool(on_backport, key, status)
            except Exception:  # the items are stored; the feed monitor's $status check covers a lost update
                logger.exception("EHR notification on %s: recording the Backport feed state failed", key)
        return response

    @router.post("/{key}", operation_id="ehr_notify", openapi_extra=_OPENAPI_DOC)
    async def notify(key: str, request: Request) -> Response:
        return await handle(request, key, None, None)

    async def notify_resource(key: str, resource_type: str, resource_id: str, request: Request) -> Response:
        return await handle(request, key, resource_type, resource_id)

    for method in ("PUT", "POST"):  # one route per method, so each has its own OpenAPI operation id
        router.add_api_route("/{key}/{resource_type}/{resource_id}", notify_resource, methods=[method],
                             operation_id=f"ehr_notify_resource_{method.lower()}", openapi_extra=_OPENAPI_DOC)

    return router


def _deleted(request: Request, url_type: str | None, url_id: str | None,
             supported: frozenset[str]) -> tuple[str | None, str | None]:
    """The resource an empty-object notification is about: the URL's, else the one Medplum names as
    deleted when this endpoint handles its type (anything else is acknowledged as a ping, so Medplum
    does not retry a delete the bridge has no use for)."""
    if url_type is not None:
        return url_type, url_id
    named = _DELETED_REF.fullmatch(request.headers.get(DELETED_HEADER, "").strip())
    if named is None or named[1] not in supported or not is_fhir_id(named[2]):
        return None, None
    return named[1], named[2]


def _rejected(key: str, rejected: NotificationRejected) -> Response:
    logger.info("EHR notification on %s rejected: HTTP %d %s", key, rejected.status, rejected.code)
    return outcome(rejected.status, rejected.code, rejected.text)


def _in_thread(sink: NotificationSink) -> Callable[[list[IncomingNotification]], Awaitable[int]]:
    async def store(items: list[IncomingNotification]) -> int:
        return await run_in_threadpool(sink.accept, items)
    return store


async def _store(store: Callable[[list[IncomingNotification]], Awaitable[int]], key: str,
                 items: list[IncomingNotification]) -> Response:
    if not items:  # handshake or heartbeat: acknowledged, nothing to keep
        return outcome(200, "informational", "Notification acknowledged; nothing to store.", "information")
    try:
        new = await store(items)
    except Exception:
        # Any sink failure means the items may not be durable: make the EHR send them again.
        logger.exception("EHR notification on %s: the inbox could not store %d item(s)", key, len(items))
        return outcome(503, "transient", "Temporarily unable to store the notification; retry later.",
                       headers={"Retry-After": _SINK_RETRY_AFTER_SECONDS})
    logger.info("EHR notification on %s: %d item(s), %d new", key, len(items), new)
    return outcome(200, "informational", f"Accepted {len(items)} notification item(s).", "information")


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise NotificationRejected(400, "structure", "Invalid Content-Length.")
        if int(declared) > limit:
            raise NotificationRejected(413, "too-costly", f"Notification body over {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # chunked transfer, or a Content-Length that lied
            raise NotificationRejected(413, "too-costly", f"Notification body over {limit} bytes.")
    return bytes(body)


def _check_ids(items: list[IncomingNotification]) -> None:
    for item in items:
        if (item.resource_id is not None and not is_fhir_id(item.resource_id)) or (
                item.version_id is not None and not is_fhir_id(item.version_id)):
            raise NotificationRejected(400, "invalid", "A resource id or version is not a FHIR id "
                                       "([A-Za-z0-9-.]{1,64}, not '.' or '..').")


def _check_content_type(request: Request, body: bytes) -> None:
    content_type = request.headers.get("content-type", "").lower()
    # An empty body (ping) may carry any content type; a body must be FHIR JSON (R4 http.html#mime-type).
    if body.strip() and content_type and "json" not in content_type:
        raise NotificationRejected(415, "not-supported", "Send notifications as application/fhir+json.")


def outcome(
    status: int, code: str, text: str, severity: str = "error", headers: dict[str, str] | None = None
) -> Response:
    """An OperationOutcome response with one issue."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }
    return Response(json.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)
