"""Turns one notification request from the EHR into resource references, or rejects it whole.

Understands every shape a FHIR R4 server uses to notify a rest-hook endpoint:

- an empty body: the classic R4 "ping" (https://hl7.org/fhir/R4/subscription.html#2.46.7.1),
  or, on ``.../{type}/{id}``, a reference given by the URL alone;
- one resource, POSTed to the endpoint or PUT to ``{endpoint}/{type}/{id}``
  (https://hl7.org/fhir/R4/subscription.html#2.46.7.2 and http.html#update);
- a Bundle (https://hl7.org/fhir/R4/bundle.html): classic transaction/batch/collection/history
  bundles, one reference per entry (``entry.resource``, else ``fullUrl``, else ``request.url``),
  and R4 Subscriptions Backport notification bundles whose first entry is the status
  (``Parameters`` or R4B ``SubscriptionStatus``,
  https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/notifications.html): handshakes and
  heartbeats carry nothing to store, event notifications yield their entries and focus
  references (full-resource and id-only) or a ping (empty payload). The status resource of every
  version (R4 ``Parameters``, R4B/R5 ``SubscriptionStatus``) is read by one function,
  :func:`ehr.backport_events.parse_status`; :func:`parse_with_status` also returns it.

Only references leave this module (the payload is never kept, see :mod:`ehr.notifications`), and
the rejection texts never quote the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ehr.backport_events import BackportNotification, BackportStatus, StatusRejected, parse_status
from ehr.notifications import IncomingNotification

DEFAULT_SUPPORTED_TYPES = frozenset({"Appointment", "DiagnosticReport", "DocumentReference", "Invoice"})
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_REFERENCE_RE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?/?$"
)
_STATUS_TYPES = ("Parameters", "SubscriptionStatus")
_NOTHING_TO_STORE = frozenset({"handshake", "heartbeat", "query-status", "query-event"})

Ref = tuple[str, str, str | None]  # (type, id, version)


class NotificationRejected(Exception):
    """The request cannot be accepted; ``status`` is the HTTP answer, ``code`` the
    OperationOutcome issue code (https://hl7.org/fhir/R4/valueset-issue-type.html)."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.code = code
        self.text = text


def parse_notification(
    body: bytes, *, key: str, url_type: str | None = None, url_id: str | None = None,
    supported_types: frozenset[str] = DEFAULT_SUPPORTED_TYPES,
) -> list[IncomingNotification]:
    """References in one request; raises :class:`NotificationRejected` if any part is invalid."""
    return parse_with_status(body, key=key, url_type=url_type, url_id=url_id, supported_types=supported_types)[0]


def parse_with_status(
    body: bytes, *, key: str, url_type: str | None = None, url_id: str | None = None,
    supported_types: frozenset[str] = DEFAULT_SUPPORTED_TYPES,
) -> tuple[list[IncomingNotification], BackportStatus | None]:
    """Like :func:`parse_notification`, and the Backport status (R4 ``Parameters`` or R4B/R5
    ``SubscriptionStatus``, read by :func:`ehr.backport_events.parse_status`) when the body is a
    topic-based notification, else ``None``. Items of an event notification are
    :class:`~ehr.backport_events.BackportNotification` carrying their event number."""
    url_ref = _url_reference(url_type, url_id)
    if not body.strip():
        refs: list[Ref] = [url_ref] if url_ref else []
        return (_items(key, _supported(refs, supported_types)) if refs else [_ping(key)]), None
    resource = _load(body)
    if url_ref is not None:
        if resource["resourceType"] != url_ref[0] or resource.get("id", url_ref[1]) != url_ref[1]:
            raise NotificationRejected(400, "invalid", "The resource in the body does not match the URL.")
        return _items(key, _supported([(url_ref[0], url_ref[1], _version(resource))], supported_types)), None
    if resource["resourceType"] == "Bundle":
        return _from_bundle(key, resource, supported_types)
    return _items(key, _supported([_resource_ref(resource, "The resource")], supported_types)), None


def _from_bundle(
    key: str, bundle: dict[str, Any], supported: frozenset[str]
) -> tuple[list[IncomingNotification], BackportStatus | None]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise NotificationRejected(400, "structure", "Bundle.entry must be a list of entries.")
    first = entries[0].get("resource") if entries else None
    if isinstance(first, dict) and first.get("resourceType") in _STATUS_TYPES:
        return _from_backport(key, first, entries[1:], supported)
    refs = []
    for number, entry in enumerate(entries, start=1):
        if _dict(entry.get("search")).get("mode") == "outcome":
            continue  # a searchset's OperationOutcome entry is commentary, not a change
        ref = _entry_ref(entry)
        if ref is None:
            raise NotificationRejected(
                400, "invalid", f"Bundle entry {number} names no resource (no id, fullUrl or request.url)."
            )
        refs.append(ref)
    return _items(key, _supported(refs, supported)), None


def _from_backport(
    key: str, resource: dict[str, Any], entries: list[dict[str, Any]], supported: frozenset[str]
) -> tuple[list[IncomingNotification], BackportStatus]:
    try:
        status = parse_status(resource)
    except StatusRejected as exc:
        raise NotificationRejected(400, "invalid", "Unknown subscription status resource.") from exc
    if status.type in _NOTHING_TO_STORE:
        return [], status
    if status.type != "event-notification":
        raise NotificationRejected(400, "invalid", "Unknown subscription notification type.")
    numbers: dict[tuple[str, str], int | None] = {}  # ordered: the focus references and their event numbers
    for event in status.events:
        focus_ref = _parse_reference(event.focus)
        if event.focus is not None and focus_ref is None:
            raise NotificationRejected(400, "invalid", "A notification event's focus is not a reference.")
        if focus_ref is not None:
            numbers.setdefault((focus_ref[0], focus_ref[1]), event.number)
    focus = dict.fromkeys(numbers)
    refs: list[Ref] = []
    for number, entry in enumerate(entries, start=2):
        ref = _entry_ref(entry)
        if ref is None:
            raise NotificationRejected(400, "invalid", f"Bundle entry {number} names no resource.")
        # Additional-context resources (the Patient, an Encounter...) are not the changes we
        # subscribed to; without focus references (some servers omit them) take what we support.
        if (ref[0], ref[1]) in focus or (not focus and ref[0] in supported):
            refs.append(ref)
    refs.extend((type_, id_, None) for type_, id_ in focus)
    items = _items(key, _supported(refs, supported)) if refs else [_ping(key)]
    first = next((event.number for event in status.events), None)
    return [_numbered(item, status, numbers.get((str(item.resource_type), str(item.resource_id)), first))
            for item in items], status


def _numbered(item: IncomingNotification, status: BackportStatus, number: int | None) -> IncomingNotification:
    return BackportNotification(item.subscription_key, item.kind, item.resource_type, item.resource_id,
                                item.version_id, status.subscription_id, status.events_since_start, number)


def _entry_ref(entry: dict[str, Any]) -> Ref | None:
    resource = entry.get("resource")
    if resource is not None:
        if not isinstance(resource, dict) or not _TYPE_RE.match(str(resource.get("resourceType", ""))):
            raise NotificationRejected(400, "structure", "A Bundle entry holds something not a resource.")
        if "id" in resource:
            return _resource_ref(resource, "A Bundle entry's resource")
    for candidate in (entry.get("fullUrl"), _dict(entry.get("request")).get("url")):
        ref = _parse_reference(candidate)
        if ref is not None and (resource is None or ref[0] == resource["resourceType"]):
            return ref if resource is None else (ref[0], ref[1], _version(resource) or ref[2])
    return None


def _resource_ref(resource: dict[str, Any], what: str) -> Ref:
    rid = resource.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise NotificationRejected(400, "invalid", f"{what} has no valid id.")
    return str(resource["resourceType"]), rid, _version(resource)


def _parse_reference(value: Any) -> Ref | None:
    if not isinstance(value, str) or value.startswith(("urn:", "#")):
        return None
    match = _REFERENCE_RE.search(urlsplit(value).path)
    return (match["type"], match["id"], match["version"]) if match else None


def _url_reference(url_type: str | None, url_id: str | None) -> Ref | None:
    if url_type is None or url_id is None:
        return None
    if not _TYPE_RE.match(url_type) or not _ID_RE.match(url_id):
        raise NotificationRejected(400, "invalid", "The URL does not name a resource as {type}/{id}.")
    return url_type, url_id, None


def _load(body: bytes) -> dict[str, Any]:
    try:
        resource = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise NotificationRejected(400, "structure", "The body is not valid JSON.") from exc
    if not isinstance(resource, dict) or not _TYPE_RE.match(str(resource.get("resourceType", ""))):
        raise NotificationRejected(400, "structure", "The body is not a FHIR resource (no resourceType).")
    return resource


def _supported(refs: Iterable[Ref], supported: frozenset[str]) -> list[Ref]:
    refs = list(refs)
    unsupported = sorted({ref[0] for ref in refs if ref[0] not in supported})
    if unsupported:
        expected = ", ".join(sorted(supported))
        text = f"Resource type(s) {', '.join(unsupported)} not accepted here; expected {expected}."
        raise NotificationRejected(422, "not-supported", text)
    return refs


def _items(key: str, refs: list[Ref]) -> list[IncomingNotification]:
    # One item per (resource, version): a history bundle may hold several versions of one
    # resource and each is its own change; a version-less duplicate of a versioned one adds nothing.
    versions: dict[tuple[str, str], list[str | None]] = {}
    for type_, id_, version in refs:
        known = versions.setdefault((type_, id_), [])
        if version not in known:
            known.append(version)
    items = []
    for (type_, id_), known in versions.items():
        versioned: list[str | None] = [version for version in known if version is not None]
        items += [IncomingNotification(key, "resource", type_, id_, v) for v in versioned or [None]]
    return items


def _ping(key: str) -> IncomingNotification:
    return IncomingNotification(key, "ping")


def _version(resource: dict[str, Any]) -> str | None:
    version = _dict(resource.get("meta")).get("versionId")
    return version if isinstance(version, str) and _ID_RE.match(version) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
