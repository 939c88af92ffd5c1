"""Topic-based Subscriptions on an R4 EHR (Subscriptions R5 Backport IG, R4 profile
``backport-subscription``): create, repair, ``$status``, re-activate, ``$events``.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/StructureDefinition-backport-subscription.html:
``Subscription.criteria`` is the topic's canonical URL, filters go in ``_criteria`` extensions
(``backport-filter-criteria``), the channel is rest-hook to ``{public_base_url}/ehr/notify/{key}``
with the per-key secret in ``channel.header`` (:mod:`ehr.hook_secrets`), and the channel carries
the ``backport-heartbeat-period``, ``backport-timeout``, ``backport-max-count`` extensions and,
on ``_payload``, ``backport-payload-content`` (``empty`` | ``id-only`` | ``full-resource``).

The server sends a ``handshake`` before it sets the Subscription ``active``; a Subscription in
``error`` or ``off`` is set back to ``requested`` (a fresh body without ``error``), which makes
the server hand-shake again (operations.html#status and the R4 Subscription state machine).

Errors: every EHR call raises :class:`ehr.errors.FhirError` subclasses;
:class:`BackportError` (a FhirError) says the server's answer was not what the IG describes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from ehr.backport_events import BackportStatus, StatusRejected, parse_status
from ehr.client import FhirClient
from ehr.errors import FhirError
from ehr.hook_secrets import channel_header, derive_secret
from ehr.subscriptions import notify_endpoint
from ehr.transport import FHIR_JSON

PayloadContent = Literal["empty", "id-only", "full-resource"]
PAYLOAD_CONTENTS: tuple[PayloadContent, ...] = ("empty", "id-only", "full-resource")
BackportAction = Literal["created", "kept", "reactivated", "updated", "deleted-duplicate"]
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PROFILE = f"{BP}/backport-subscription"
EXT_FILTER = f"{BP}/backport-filter-criteria"
EXT_CONTENT = f"{BP}/backport-payload-content"
EXT_HEARTBEAT = f"{BP}/backport-heartbeat-period"
EXT_TIMEOUT = f"{BP}/backport-timeout"
EXT_MAX_COUNT = f"{BP}/backport-max-count"
# R4 servers publish topics as Basic resources with the R5 cross-version extensions (fhir-candle, sekmet).
TOPIC_URL_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url"
STOPPED = ("error", "off")

logger = logging.getLogger(__name__)


class BackportError(FhirError):
    """The EHR answered, but not with what the Backport IG describes (e.g. ``$status`` without a
    status resource)."""


@dataclass(frozen=True)
class BackportSpec:
    """One topic-based Subscription the bridge wants. ``resource_type`` is what the topic reports
    (the re-sync query searches it); ``filters`` are ``_criteria`` filter strings such as
    ``Appointment?actor=Location/1``."""

    key: str
    topic: str
    resource_type: str
    content: PayloadContent = "id-only"
    heartbeat_seconds: int | None = 60
    timeout_seconds: int | None = 30
    max_count: int | None = 20
    filters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.topic.startswith(("http://", "https://", "urn:")) or "?" in self.topic:
            raise ValueError("a Backport topic is a canonical URL without a query")
        if self.content not in PAYLOAD_CONTENTS:
            raise ValueError(f"payload content is one of {', '.join(PAYLOAD_CONTENTS)}")


@dataclass(frozen=True)
class BackportState:
    """What the EHR holds for one spec after :func:`ensure_backport_subscription`."""

    key: str
    fhir_id: str | None
    status: str | None
    error: str | None = None
    action: BackportAction | None = None


def build_subscription(spec: BackportSpec, endpoint: str, header: str) -> dict[str, Any]:
    """The R4 ``backport-subscription`` resource for ``spec``."""
    channel: dict[str, Any] = {
        "type": "rest-hook", "endpoint": endpoint, "header": [header], "payload": FHIR_JSON,
        "_payload": {"extension": [{"url": EXT_CONTENT, "valueCode": spec.content}]},
    }
    extensions = [{"url": url, "valueUnsignedInt": value} for url, value in (
        (EXT_HEARTBEAT, spec.heartbeat_seconds), (EXT_TIMEOUT, spec.timeout_seconds),
        (EXT_MAX_COUNT, spec.max_count)) if value]
    if extensions:
        channel["extension"] = extensions
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE]},
        "status": "requested",
        "reason": f"fhir-whatsapp-bridge: PHI-free patient notifications ({spec.key})",
        "criteria": spec.topic,
        "channel": channel,
    }
    if spec.filters:
        subscription["_criteria"] = {"extension": [{"url": EXT_FILTER, "valueString": f} for f in spec.filters]}
    return subscription


async def discover_topics(client: FhirClient) -> list[str]:
    """Canonical URLs of the topics the EHR advertises as ``Basic?code=SubscriptionTopic``
    (the IG's R4 convention, topics.html)."""
    found = await client.search("Basic", [("code", "SubscriptionTopic")])
    urls = []
    for basic in found:
        for extension in basic.get("extension") or []:
            if isinstance(extension, dict) and extension.get("url") == TOPIC_URL_EXT:
                urls.append(str(extension.get("valueUri") or extension.get("valueCanonical") or ""))
    return sorted(url for url in set(urls) if url)


async def ensure_backport_subscription(
    client: FhirClient, spec: BackportSpec, public_base_url: str, master_secret: bytes,
) -> list[BackportState]:
    """Makes the EHR hold exactly one working Subscription for ``spec`` (idempotent): create it,
    keep it, update a drifted one, re-activate a stopped one, delete duplicates."""
    endpoint = notify_endpoint(public_base_url, spec.key)
    wanted = build_subscription(spec, endpoint, channel_header(derive_secret(master_secret, spec.key)))
    found = await find_subscriptions(client, endpoint)
    if not found:
        created = await client.create(wanted)
        return [_state(spec.key, await client.read("Subscription", str(created["id"])), "created")]
    found.sort(key=lambda sub: (_matches(sub, wanted), sub.get("status") == "active"), reverse=True)
    best, states = found[0], []
    if _matches(best, wanted) and best.get("status") not in STOPPED:
        states.append(_state(spec.key, best, "kept"))
    else:
        action: BackportAction = "reactivated" if _matches(best, wanted) else "updated"
        written = await client.update({**wanted, "id": best["id"]}, if_match=_version(best))
        states.append(_state(spec.key, await client.read("Subscription", str(written["id"])), action))
    for duplicate in found[1:]:
        await client.delete("Subscription", str(duplicate["id"]))
        states.append(BackportState(spec.key, str(duplicate["id"]), None, action="deleted-duplicate"))
    for state in states:
        logger.info("Backport subscription %s: %s, status %s", state.key, state.action, state.status)
    return states


async def find_subscriptions(client: FhirClient, endpoint: str) -> list[dict[str, Any]]:
    """The Subscriptions whose ``channel.endpoint`` is exactly ``endpoint``."""
    found = await client.search("Subscription", [("url", endpoint)])
    return [sub for sub in found if sub.get("resourceType") == "Subscription" and isinstance(sub.get("id"), str)
            and str((sub.get("channel") or {}).get("endpoint", "")).rstrip("/") == endpoint]


async def fetch_status(client: FhirClient, subscription_id: str) -> BackportStatus:
    """``GET Subscription/{id}/$status`` (operations.html#status): the server's status and
    ``events-since-subscription-start``. Raises :class:`BackportError` on an answer without one."""
    url = f"Subscription/{_id(subscription_id)}/$status"
    response = await client.transport.send("status", "Subscription", "GET", url)
    bundle = _json(response.content, "status")
    first = _first_status(bundle)
    if first is None:
        raise BackportError("the $status answer holds no subscription status", operation="status",
                            resource_type="Subscription")
    try:
        return parse_status(first)
    except StatusRejected as exc:
        raise BackportError("the $status answer is not a subscription status", operation="status",
                            resource_type="Subscription") from exc


async def reactivate(client: FhirClient, subscription_id: str) -> BackportState:
    """Sets a Subscription back to ``requested`` (without ``error``) with ``If-Match``; the server
    hand-shakes again and activates it. Returns the state read back."""
    current = await client.read("Subscription", _id(subscription_id))
    body = {key: value for key, value in current.items() if key not in ("error", "meta")}
    body["status"] = "requested"
    if (current.get("meta") or {}).get("profile"):
        body["meta"] = {"profile": current["meta"]["profile"]}
    written = await client.update(body, if_match=_version(current))
    state = _state("", await client.read("Subscription", str(written["id"])), "reactivated")
    logger.info("Backport subscription re-activated: status %s", state.status)
    return state


def supports_events(capability_statement: dict[str, Any]) -> bool:
    """True when the CapabilityStatement lists the ``$events`` operation on Subscription
    (operations.html#events); otherwise recovery falls back to a re-sync query."""
    for rest in capability_statement.get("rest") or []:
        for resource in (rest.get("resource") or []) if isinstance(rest, dict) else []:
            if isinstance(resource, dict) and resource.get("type") == "Subscription":
                names = {str(op.get("name", "")).lstrip("$") for op in resource.get("operation") or []
                         if isinstance(op, dict)}
                if "events" in names:
                    return True
    return False


async def fetch_events(client: FhirClient, subscription_id: str, first: int, last: int) -> dict[str, Any]:
    """``GET Subscription/{id}/$events?eventsSinceNumber=first&eventsUntilNumber=last&content=id-only``:
    a notification Bundle (parse it like any notification) with the missed events."""
    params = [("eventsSinceNumber", str(first)), ("eventsUntilNumber", str(last)), ("content", "id-only")]
    url = f"Subscription/{_id(subscription_id)}/$events"
    response = await client.transport.send("events", "Subscription", "GET", url, params=params)
    return _json(response.content, "events")


def _first_status(bundle: dict[str, Any]) -> dict[str, Any] | None:
    if bundle.get("resourceType") in ("Parameters", "SubscriptionStatus"):
        return bundle
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") in ("Parameters", "SubscriptionStatus"):
            return resource
    return None


def _json(content: bytes, operation: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError as exc:
        raise BackportError("the EHR's answer is not JSON", operation=operation,
                            resource_type="Subscription") from exc
    if not isinstance(value, dict):
        raise BackportError("the EHR's answer is not a FHIR resource", operation=operation,
                            resource_type="Subscription")
    return value


def _matches(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    have, want = existing.get("channel") or {}, wanted["channel"]
    return (existing.get("criteria") == wanted["criteria"]
            and existing.get("_criteria") == wanted.get("_criteria")
            and have.get("type") == "rest-hook"
            and have.get("_payload") == want["_payload"]
            and sorted(have.get("extension") or [], key=str) == sorted(want.get("extension") or [], key=str)
            and set(have.get("header") or []) == set(want["header"]))


def _state(key: str, sub: dict[str, Any], action: BackportAction | None) -> BackportState:
    status, error = sub.get("status"), sub.get("error")
    return BackportState(key, str(sub.get("id")), status if isinstance(status, str) else None,
                         error if isinstance(error, str) else None, action)


def _version(resource: dict[str, Any]) -> str | None:
    return str((resource.get("meta") or {}).get("versionId") or "") or None


def _id(value: str) -> str:
    if not value or "/" in value or "?" in value or len(value) > 64:
        raise ValueError("not a FHIR logical id")
    return value
