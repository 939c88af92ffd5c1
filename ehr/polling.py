"""Polling the EHR for changes: the feed for EHRs without usable Subscriptions, and the periodic
reconcile (and catch-up at start) for classic rest-hook ones, which cannot tell what they failed
to deliver.

One poll of one feed is a search (FHIR R4 search.html, ``_lastUpdated`` and ``_sort``)::

    GET [base]/Appointment?_lastUpdated=ge<since>&_sort=_lastUpdated&_count=<n>

with ``Bundle.link[next]`` followed page by page (search.html#paging, :func:`poll_pages`), so the
caller stores each page, and moves the cursor, before asking for the next. ``since`` comes from
the EHR's own clock, never ours: the newest ``meta.lastUpdated`` seen so far (the watermark) minus
a safety lag, because a transaction that commits late can carry an older timestamp than
resources already seen. ``ge`` re-reads equal timestamps and the lag window on every poll; each
change is still handled once because it is reported as (type, id, versionId), which the inbox
dedupes on (:func:`adapter.feeds.inbox.dedupe_key`).

Where polling starts when a feed has no cursor yet (:func:`start_point`): the last change the
bridge processed, if any (an upgrade, or a service stopped before its first poll), never further
back than a limit; else the EHR's clock now (:func:`server_now`, from the ``meta.lastUpdated`` of
a search Bundle fetched through a ``batch``, http.html#transaction), so installing the bridge does
not message patients about old changes.

Everything here talks to the EHR only; the database side (watermark, inbox, audit, health) is
:mod:`adapter.feeds.polling`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ehr.client import FhirClient
from ehr.errors import FhirInvalidResponseError
from ehr.notifications import IncomingNotification

DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class PollFeed:
    """One feed to poll: ``key`` names it (the Subscription key it mirrors), ``criteria`` is an R4
    search expression such as ``"Appointment"`` (every change, cancellations and no-shows included)
    or ``"DiagnosticReport?status=final"`` (its parameters are added to the poll's)."""

    key: str
    criteria: str

    @property
    def resource_type(self) -> str:
        return self.criteria.split("?", 1)[0]

    @property
    def filters(self) -> list[tuple[str, str]]:
        _, _, query = self.criteria.partition("?")
        return [(name, value) for name, value in parse_qsl(query) if not name.startswith("_")]

    @property
    def inbox_key(self) -> str:
        """The ``subscription_key`` polled changes carry in the inbox (``poll:<key>``)."""
        return f"poll:{self.key}"[:64]


@dataclass(frozen=True)
class PollResult:
    """What one poll (or one page of it) found: the changes (references with versions, never
    payloads), the newest ``meta.lastUpdated`` among them (``None`` if none), the search parameters
    used, and whether more pages follow."""

    feed: PollFeed
    params: list[tuple[str, str]]
    changes: list[IncomingNotification]
    newest: str | None
    more: bool = False


def parse_instant(value: str) -> datetime:
    """A FHIR ``instant`` (datatypes.html#instant) as an aware UTC datetime; raises ValueError."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a FHIR instant must carry a time zone")
    return moment.astimezone(UTC)


def format_instant(moment: datetime) -> str:
    """An aware datetime as a FHIR instant in UTC with milliseconds."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def later(first: str | None, second: str | None) -> str | None:
    """The later of two FHIR instants (by time, not by text: servers format offsets differently)."""
    if first is None or second is None:
        value = first or second
        if value is not None:
            parse_instant(value)  # a value that is not an instant is refused here, not stored
        return value
    return first if parse_instant(first) >= parse_instant(second) else second


def poll_since(watermark: str, start_at: str | None, safety_lag: timedelta) -> str:
    """The lower bound of the next poll: the watermark minus the lag, never before ``start_at``."""
    since = parse_instant(watermark) - safety_lag
    if start_at is not None:
        since = max(since, parse_instant(start_at))
    return format_instant(since)


def poll_params(feed: PollFeed, since: str, page_size: int = DEFAULT_PAGE_SIZE) -> list[tuple[str, str]]:
    return [*feed.filters, ("_lastUpdated", f"ge{since}"), ("_sort", "_lastUpdated"), ("_count", str(page_size))]


async def poll_pages(client: FhirClient, feed: PollFeed, since: str, *,
                     page_size: int = DEFAULT_PAGE_SIZE) -> AsyncGenerator[PollResult, None]:
    """The changes of ``feed`` at or after ``since``, one page (``_count`` = ``page_size``) at a
    time, oldest first; ``more`` says whether another page follows. Raises
    :class:`ehr.errors.FhirError` subclasses."""
    params = poll_params(feed, since, page_size)
    async with contextlib.aclosing(client.search_pages(feed.resource_type, params)) as pages:
        async for page in pages:
            yield _result(feed, params, page.resources, page.more)


def _result(feed: PollFeed, params: list[tuple[str, str]], found: Sequence[Any], more: bool) -> PollResult:
    changes: list[IncomingNotification] = []
    newest: str | None = None
    for resource in found:
        if resource.get("resourceType") != feed.resource_type or not isinstance(resource.get("id"), str):
            continue  # an _include-d or malformed entry: not a change of this feed
        meta = resource.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        updated = meta.get("lastUpdated") if isinstance(meta.get("lastUpdated"), str) else None
        version = meta.get("versionId")
        # Without a versionId the change is identified by its timestamp, so re-reads still dedupe.
        version_id = str(version) if version is not None else (f"t{updated}" if updated else None)
        changes.append(IncomingNotification(feed.inbox_key, "resource", feed.resource_type, resource["id"],
                                            version_id))
        if updated is not None:
            try:
                newest = later(newest, updated)
            except ValueError:
                continue  # queued all the same; a timestamp we cannot read never moves the watermark
    return PollResult(feed, params, changes, newest, more)


def start_point(now: str, last_processed: str | None, safety_lag: timedelta,
                max_lookback: timedelta) -> str | None:
    """Where a feed without a cursor starts reading, given the EHR's clock ``now`` and the
    ``meta.lastUpdated`` of the last change the bridge processed (``None``: nothing yet). ``None``
    means "at ``now``, fetching nothing" (a fresh install); otherwise the last processed moment
    minus the lag, never before ``now - max_lookback``. An unreadable ``last_processed`` counts as
    nothing processed."""
    if last_processed is None:
        return None
    try:
        moment = parse_instant(last_processed) - safety_lag
    except ValueError:
        return None
    current = parse_instant(now)
    if moment >= current:
        return None
    return format_instant(max(moment, current - max_lookback))


async def server_now(client: FhirClient, feed: PollFeed) -> str:
    """The EHR's clock: ``meta.lastUpdated`` of a one-entry search Bundle fetched in a ``batch``
    (so one request returns the Bundle itself), else the batch response's, else the newest
    resource's. Raises :class:`FhirInvalidResponseError` if the EHR states no time at all."""
    query = urlencode([("_sort", "-_lastUpdated"), ("_count", "1")])
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": f"{feed.resource_type}?{query}"}}]}
    answer = await client.transaction(batch)
    searchset = _first_resource(answer)
    candidates: list[Any] = [_updated(searchset), _updated(answer)]
    entries = searchset.get("entry") if searchset is not None else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            candidates.append(_updated(entry.get("resource")))
    for candidate in candidates:
        if isinstance(candidate, str):
            try:
                return format_instant(parse_instant(candidate))
            except ValueError:
                continue
    raise FhirInvalidResponseError("the EHR's search Bundle states no meta.lastUpdated: cannot start polling "
                                   "from the EHR's clock", operation="transaction", resource_type=feed.resource_type)


def feeds_from_specs(specs: Sequence[Any]) -> list[PollFeed]:
    """One poll feed per :class:`ehr.subscriptions.SubscriptionSpec` (same key and criteria)."""
    return [PollFeed(spec.key, spec.criteria) for spec in specs]


def _first_resource(bundle: dict[str, Any]) -> dict[str, Any] | None:
    entries = bundle.get("entry")
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        resource = entries[0].get("resource")
        if isinstance(resource, dict):
            return resource
    return None


def _updated(resource: Any) -> Any:
    if not isinstance(resource, dict) or not isinstance(resource.get("meta"), dict):
        return None
    return resource["meta"].get("lastUpdated")
