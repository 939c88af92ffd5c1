"""This process's Prometheus instruments (counters and histograms, in the text exposition format of
https://prometheus.io/docs/instrumenting/exposition_formats/): send results, EHR calls, webhook
intake (WhatsApp webhooks and the EHR's rest-hook notifications), delivery statuses, pacing waits.

Each process counts its own work; a scraper sums them over instances. The database-derived gauges
(queues, dead letters, feeds, audit chain) are computed at scrape time by
:mod:`adapter.http.metrics`, the same from any instance.

Labels come only from small fixed sets (send result, template name, Meta error code, exception
class name, FHIR operation and resource type, HTTP status): never a patient, number, message id,
outbox id or token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import Counter, Histogram, disable_created_metrics
from starlette.requests import Request
from starlette.responses import Response

disable_created_metrics()  # no ``*_created`` series: a process's start time is process_start_time_seconds
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SEND_RESULTS = Counter(
    "bridge_whatsapp_send_results", "Cloud API send attempts recorded, by result and template "
    "(template name, or the body type for free-form messages).", ["result", "template"])
SEND_ERRORS = Counter(
    "bridge_whatsapp_send_errors", "Send attempts that failed, by Meta error code (empty when the request "
    "got no Meta error, e.g. a timeout) and error class.", ["code", "error_class"])
DEAD_LETTERS = Counter(
    "bridge_whatsapp_dead_letters", "Messages given up on by the sender (dead letters), by template.", ["template"])
EHR_SECONDS = Histogram(
    "bridge_ehr_request_duration_seconds", "FHIR calls to the EHR, by operation and resource type.",
    ["operation", "resource_type"], buckets=_LATENCY_BUCKETS)
EHR_ERRORS = Counter(
    "bridge_ehr_request_errors", "FHIR calls that failed, by operation, resource type and error (HTTP status "
    "or error class).", ["operation", "resource_type", "error"])
WEBHOOK_SECONDS = Histogram(
    "bridge_whatsapp_webhook_duration_seconds", "WhatsApp webhook intake (verify, parse, store), by HTTP status "
    "answered.", ["status"], buckets=_LATENCY_BUCKETS)
EHR_WEBHOOK_SECONDS = Histogram(
    "bridge_ehr_webhook_duration_seconds", "EHR rest-hook notification intake (authenticate, read, parse, store in "
    "the inbox), by HTTP status answered.", ["status"], buckets=_LATENCY_BUCKETS)
DELIVERY_STATUSES = Counter(
    "bridge_whatsapp_delivery_statuses", "Delivery statuses from Meta's webhooks that moved a message (sent, "
    "delivered, read, failed), by status and template.", ["status", "template"])
DELIVERY_FAILURES = Counter(
    "bridge_whatsapp_delivery_failures", "Messages Meta accepted and then reported failed, by Meta error code.",
    ["code"])
PACING_WAITS = Counter(
    "bridge_pacing_waits", "Sends held back by this process's throughput limit "
    "(whatsapp_messages_per_second / instance_count).")
PACING_WAIT_SECONDS = Counter(
    "bridge_pacing_wait_seconds", "Seconds sends were held back by this process's throughput limit.")


class _Outcome(Protocol):
    """What a recorded send outcome tells (:class:`adapter.outbox.results.SendOutcome`)."""

    @property
    def outbox_id(self) -> int: ...
    @property
    def result(self) -> str: ...
    @property
    def error_code(self) -> int | None: ...
    @property
    def error_class(self) -> str | None: ...
    @property
    def attempted(self) -> bool: ...


def count_sends(outcomes: Iterable[_Outcome], templates: Mapping[int, str | None]) -> None:
    """Counts committed send outcomes; ``templates`` names each outbox row's template or body type.
    A request never made (sending paused, lease lost) is not a send and is not counted."""
    for outcome in outcomes:
        if not outcome.attempted:
            continue
        template = templates.get(outcome.outbox_id) or "unknown"
        SEND_RESULTS.labels(outcome.result, template).inc()
        if outcome.result != "sent" and (outcome.error_code is not None or outcome.error_class):
            SEND_ERRORS.labels("" if outcome.error_code is None else str(outcome.error_code),
                               outcome.error_class or "").inc()
        if outcome.result == "dead":
            DEAD_LETTERS.labels(template).inc()


def observe_ehr_call(operation: str, resource_type: str | None, seconds: float, error: str | None) -> None:
    """The observer :func:`ehr.transport.observe_calls` calls after every FHIR request."""
    EHR_SECONDS.labels(operation, resource_type or "").observe(seconds)
    if error is not None:
        EHR_ERRORS.labels(operation, resource_type or "", error).inc()


def timed_webhook(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` timed from the request to its answer, by the HTTP status answered."""
    async def timed(request: Request) -> Response:
        started = time.perf_counter()
        response = await handler(request)
        WEBHOOK_SECONDS.labels(str(response.status_code)).observe(time.perf_counter() - started)
        return response
    return timed


def pacing_waited(seconds: float) -> None:
    PACING_WAITS.inc()
    PACING_WAIT_SECONDS.inc(seconds)


def count_statuses(changed: Iterable[tuple[str, str, int | None]]) -> None:
    """Counts committed delivery statuses, each (status, template, Meta error code of a failure)."""
    for status, template, code in changed:
        DELIVERY_STATUSES.labels(status, template).inc()
        if status == "failed":
            DELIVERY_FAILURES.labels("" if code is None else str(code)).inc()


def observe_ehr_webhook(status: int, seconds: float) -> None:
    """The observer :func:`ehr.intake.observe_intake` calls after every EHR notification answered."""
    EHR_WEBHOOK_SECONDS.labels(str(status)).observe(seconds)
