"""Keeps the EHR's classic R4 rest-hook Subscriptions in the state the bridge needs.

Implements the client side of https://hl7.org/fhir/R4/subscription.html: a Subscription with
``channel.type = rest-hook`` whose ``channel.endpoint`` is ``{public_base_url}/ehr/notify/{key}``,
``channel.header`` carrying the per-key bearer secret (:mod:`ehr.hook_secrets`) and
``channel.payload`` set (full resource) or absent (an empty "ping" notification). A spec with
``auth="medplum-signature"`` carries the same secret in Medplum's ``subscription-secret`` extension
instead of the header, so Medplum signs each notification body (``X-Signature``).

:func:`ensure_subscriptions` is idempotent and safe on every start: it finds the existing
Subscriptions by endpoint, keeps, repairs or re-activates one and deletes duplicates, so restarts
never pile up Subscriptions. The server decides when a ``requested`` Subscription becomes
``active`` (https://hl7.org/fhir/R4/subscription.html#2.46.7.2); the state reported is the one
read back after each write.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from fhir.resources.R4B.subscription import Subscription as R4BSubscription

from ehr.client import FhirClient
from ehr.hook_secrets import MEDPLUM_SECRET_EXTENSION, NOTIFY_AUTHS, NotifyAuth, channel_header, derive_secret
from ehr.transport import FHIR_JSON

PayloadKind = Literal["full-resource", "empty"]
SubscriptionAction = Literal["created", "kept", "reactivated", "updated", "deleted-duplicate", "deleted-stale"]
NOTIFY_PATH = "/ehr/notify"
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_STOPPED = ("error", "off")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubscriptionSpec:
    """One Subscription the bridge wants: ``key`` names its endpoint (a URL path segment),
    ``criteria`` is the R4 search criteria (``"Appointment"`` matches every Appointment write,
    so cancellations are reported too), ``payload`` whether the EHR sends the resource, ``auth``
    how its notifications authenticate (:data:`ehr.hook_secrets.NotifyAuth`)."""

    key: str
    criteria: str
    payload: PayloadKind = "full-resource"
    auth: NotifyAuth = "header"

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key):
            raise ValueError("a subscription key is lower-case letters, digits and '-' (max 63)")
        if not self.criteria or self.criteria != self.criteria.strip():
            raise ValueError("subscription criteria must be a non-empty search expression")
        if self.auth not in NOTIFY_AUTHS:
            raise ValueError(f"a subscription's auth is one of {', '.join(NOTIFY_AUTHS)}")


DEFAULT_SUBSCRIPTION_SPECS: tuple[SubscriptionSpec, ...] = (
    SubscriptionSpec("appointment", "Appointment", "full-resource"),
    SubscriptionSpec("diagnostic-report", "DiagnosticReport", "full-resource"),
)


# Feeds for the non-clinical notices (a DocumentReference becoming current, an Invoice issued), wanted only
# when a mapping rule is about that resource type: a hospital without such rules is not notified of them.
NOTICE_SUBSCRIPTION_SPECS: tuple[SubscriptionSpec, ...] = (
    SubscriptionSpec("document-reference", "DocumentReference", "full-resource"),
    SubscriptionSpec("invoice", "Invoice", "full-resource"),
)


def default_specs(auth: NotifyAuth = "header", resource_types: Collection[str] = ()) -> tuple[SubscriptionSpec, ...]:
    """:data:`DEFAULT_SUBSCRIPTION_SPECS`, plus the :data:`NOTICE_SUBSCRIPTION_SPECS` of ``resource_types``
    (the types the mapping rules are about, :meth:`mappings.rules.RuleSet.resource_types`), each
    authenticating its notifications with ``auth``."""
    notices = tuple(spec for spec in NOTICE_SUBSCRIPTION_SPECS if spec.criteria in resource_types)
    return tuple(replace(spec, auth=auth) for spec in (*DEFAULT_SUBSCRIPTION_SPECS, *notices))


@dataclass(frozen=True)
class SubscriptionState:
    """What the EHR holds for one spec. ``status`` is ``Subscription.status`` (``None`` when the
    EHR holds none, or it was just deleted); ``error`` is the server's ``Subscription.error``;
    ``action`` is what :func:`ensure_subscriptions` did (``None`` from
    :func:`subscription_status`)."""

    key: str
    fhir_id: str | None
    status: str | None
    error: str | None = None
    action: SubscriptionAction | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "active"


def notify_endpoint(public_base_url: str, key: str) -> str:
    """``{public_base_url}/ehr/notify/{key}``: the URL the EHR notifies for one spec."""
    return f"{public_base_url.rstrip('/')}{NOTIFY_PATH}/{key}"


async def ensure_subscriptions(
    client: FhirClient, specs: Sequence[SubscriptionSpec],
    public_base_url: str, master_secret: bytes,
) -> list[SubscriptionState]:
    """Makes the EHR hold exactly one working Subscription per spec; returns what was done.

    Per spec: none found → create; one matching → keep; one whose criteria, payload or header
    drifted → update it; one in ``error``/``off`` → set it back to ``requested``; more than one →
    keep the best and delete the others (one ``deleted-duplicate`` state each). Raises
    :class:`ehr.errors.FhirError` subclasses; a concurrent change to the same Subscription
    surfaces as :class:`ehr.errors.FhirConflictError` (the update uses ``If-Match``).
    """
    _warn_if_cleartext(public_base_url)
    states: list[SubscriptionState] = []
    for spec in specs:
        endpoint = notify_endpoint(public_base_url, spec.key)
        wanted = _desired(spec, endpoint, derive_secret(master_secret, spec.key))
        found = await _find(client, endpoint)
        if not found:
            created = await client.create(wanted)
            done = [await _reread(client, spec.key, created, "created")]
        else:
            found.sort(key=lambda sub: _rank(sub, wanted), reverse=True)
            done = [await _repair(client, spec.key, found[0], wanted)]
            for duplicate in found[1:]:
                await client.delete("Subscription", str(duplicate["id"]))
                gone = SubscriptionState(spec.key, str(duplicate["id"]), None, action="deleted-duplicate")
                done.append(gone)
        for state in done:
            logger.info("EHR subscription %s: %s, status %s", state.key, state.action, state.status)
        states.extend(done)
    return states


async def subscription_status(
    client: FhirClient, specs: Sequence[SubscriptionSpec], public_base_url: str,
) -> list[SubscriptionState]:
    """Reads the Subscriptions the EHR holds for each spec: one state per Subscription found, or
    one with ``fhir_id=None`` for a spec the EHR has none for. Changes nothing."""
    states: list[SubscriptionState] = []
    for spec in specs:
        found = await _find(client, notify_endpoint(public_base_url, spec.key))
        states.extend(_state(spec.key, sub, None) for sub in found)
        if not found:
            states.append(SubscriptionState(spec.key, None, None))
    return states


async def delete_stale_subscriptions(
    client: FhirClient, keep_keys: Collection[str], public_base_url: str,
) -> list[SubscriptionState]:
    """Deletes the Subscriptions that notify OUR endpoint (``{public_base_url}/ehr/notify/<key>``)
    for a key no longer configured (``keep_keys`` must name every configured feed, classic and
    Backport), so a removed feed, or one switched to polling, stops costing the EHR deliveries.
    Subscriptions of other systems are never touched. One ``deleted-stale`` state per deletion."""
    prefix = notify_endpoint(public_base_url, "")
    deleted: list[SubscriptionState] = []
    for sub in await client.search("Subscription", [("_count", "200")]):
        endpoint = str(_channel(sub).get("endpoint", "")).rstrip("/")
        if sub.get("resourceType") != "Subscription" or not isinstance(sub.get("id"), str):
            continue
        if not endpoint.startswith(prefix) or endpoint[len(prefix):] in keep_keys:
            continue
        await client.delete("Subscription", sub["id"])
        state = SubscriptionState(endpoint[len(prefix):][:64], sub["id"], None, action="deleted-stale")
        logger.info("EHR subscription %s: deleted-stale (no such feed configured)", state.key)
        deleted.append(state)
    return deleted


async def _find(client: FhirClient, endpoint: str) -> list[dict[str, Any]]:
    # `url` searches channel.endpoint (R4 Subscription search parameters); compare exactly here
    # because servers differ in how they match uri parameters.
    found = await client.search("Subscription", [("url", endpoint)])
    return [
        sub for sub in found
        if sub.get("resourceType") == "Subscription" and isinstance(sub.get("id"), str)
        and str(_channel(sub).get("endpoint", "")).rstrip("/") == endpoint
    ]


async def _repair(
    client: FhirClient, key: str, existing: dict[str, Any], wanted: dict[str, Any]
) -> SubscriptionState:
    if _matches(existing, wanted) and existing.get("status") not in _STOPPED:
        return _state(key, existing, "kept")
    action: SubscriptionAction = "updated" if not _matches(existing, wanted) else "reactivated"
    # A fresh body (status `requested`, no `error`) is what re-activation means in R4: the server
    # re-checks the channel and moves it to `active` (or back to `error`).
    version = str(existing.get("meta", {}).get("versionId", "")) or None
    written = await client.update({**wanted, "id": existing["id"]}, if_match=version)
    return await _reread(client, key, written, action)


async def _reread(
    client: FhirClient, key: str, written: dict[str, Any], action: SubscriptionAction
) -> SubscriptionState:
    # The write's answer shows `requested`; servers activate right after (sekmet does it before
    # answering, as a second version), so the current version tells the real outcome.
    current = await client.read("Subscription", str(written["id"]))
    return _state(key, current, action)


def _desired(spec: SubscriptionSpec, endpoint: str, secret: str) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if spec.auth == "header":
        channel["header"] = [channel_header(secret)]
    if spec.payload == "full-resource":
        channel["payload"] = FHIR_JSON
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": f"fhir-whatsapp-bridge: PHI-free patient notifications ({spec.key})",
        "criteria": spec.criteria,
        "channel": channel,
    }
    if spec.auth == "medplum-signature":
        subscription["extension"] = [{"url": MEDPLUM_SECRET_EXTENSION, "valueString": secret}]
    # What we write is validated against the R4 model (fhir.resources' R4B package reads R4 JSON);
    # a mistake here is ours, and is better refused locally than by the EHR.
    R4BSubscription.model_validate(subscription)
    return subscription


def _matches(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    have, want = _channel(existing), _channel(wanted)
    has_payload = bool(have.get("payload"))
    return (
        existing.get("criteria") == wanted["criteria"]
        and have.get("type") == "rest-hook"
        and has_payload == ("payload" in want)
        and (not has_payload or "json" in str(have.get("payload")))
        and set(_strings(have.get("header"))) == set(want.get("header", []))
        and _signing_secret(existing) == _signing_secret(wanted)
    )


def _signing_secret(sub: dict[str, Any]) -> str | None:
    extensions = sub.get("extension")
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, dict) and extension.get("url") == MEDPLUM_SECRET_EXTENSION:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


def _rank(existing: dict[str, Any], wanted: dict[str, Any]) -> tuple[bool, bool, bool]:
    status = existing.get("status")
    return _matches(existing, wanted), status == "active", status not in _STOPPED


def _state(key: str, sub: dict[str, Any], action: SubscriptionAction | None) -> SubscriptionState:
    status, error = sub.get("status"), sub.get("error")
    return SubscriptionState(
        key, str(sub["id"]), status if isinstance(status, str) else None,
        error if isinstance(error, str) else None, action,
    )


def _channel(sub: dict[str, Any]) -> dict[str, Any]:
    channel = sub.get("channel")
    return channel if isinstance(channel, dict) else {}


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _warn_if_cleartext(public_base_url: str) -> None:
    parts = urlsplit(public_base_url)
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("public_base_url is not https: the EHR will send notification secrets in clear text")
