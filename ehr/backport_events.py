"""Backport notification status and event numbers: one reading of R4, R4B and R5 status, and the
gap arithmetic on event numbers.

A topic-based notification Bundle starts with a status resource
(https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/notifications.html):

- R4 (Backport IG ``backport-subscription-status-r4``): a ``Parameters`` resource with kebab-case
  names (``type``, ``status``, ``subscription``, ``topic``, ``events-since-subscription-start``,
  ``notification-event`` with parts ``event-number``, ``timestamp``, ``focus``); some servers send
  camelCase names, which are accepted too;
- R4B and R5: a ``SubscriptionStatus`` resource (``eventsSinceSubscriptionStart``,
  ``notificationEvent.eventNumber``, ``.focus``), https://hl7.org/fhir/R5/subscriptionstatus.html.

:func:`parse_status` turns either into one :class:`BackportStatus`, so everything downstream has
one code path. :class:`EventCursor` keeps the highest contiguous event number and the numbers seen
above it (https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/errors.html: "a gap in event
numbers means notifications were missed"). :data:`GapMode` says how a server numbers events:
``events-since-start`` (per event, as the IG says), ``per-bundle`` (the counter counts Bundles),
or ``off`` (no gap detection; the heartbeat / ``$status`` re-sync net stays).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ehr.notifications import IncomingNotification

GapMode = Literal["events-since-start", "per-bundle", "off"]
GAP_MODES: tuple[GapMode, ...] = ("events-since-start", "per-bundle", "off")
_MAX_PENDING = 64  # numbers kept above the contiguous one; more means "recover", not "remember"
_ID_RE = re.compile(r"(?:^|/)Subscription/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?/?$")


@dataclass(frozen=True)
class NotificationEvent:
    """One ``notification-event``: its number (if the server gave one), ``focus`` reference and time."""

    number: int | None
    focus: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class BackportStatus:
    """A notification's (or ``$status`` answer's) status, whatever the FHIR version it came in."""

    type: str | None
    status: str | None = None
    subscription: str | None = None
    topic: str | None = None
    events_since_start: int | None = None
    events: tuple[NotificationEvent, ...] = ()

    @property
    def subscription_id(self) -> str | None:
        """The logical id of ``subscription`` (an absolute or relative reference)."""
        match = _ID_RE.search(self.subscription or "")
        return match.group(1) if match else None


@dataclass(frozen=True, eq=False)
class BackportNotification(IncomingNotification):
    """An :class:`~ehr.notifications.IncomingNotification` from a Backport event notification; the
    inbox dedupes on (subscription, events-since-start, event number, target) when there is no
    version to dedupe on. It equals the plain notification of the same change (the delivery
    details are not part of what changed)."""

    subscription_id: str | None = None
    events_since_start: int | None = None
    event_number: int | None = None

    def _change(self) -> tuple[object, ...]:
        return self.subscription_key, self.kind, self.resource_type, self.resource_id, self.version_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IncomingNotification):
            return NotImplemented
        return self._change() == (other.subscription_key, other.kind, other.resource_type, other.resource_id,
                                  other.version_id)

    def __hash__(self) -> int:
        return hash(self._change())


class StatusRejected(ValueError):
    """A status resource that is neither a Backport ``Parameters`` nor a ``SubscriptionStatus``."""


def parse_status(resource: dict[str, Any]) -> BackportStatus:
    """Reads a Backport ``Parameters`` or a ``SubscriptionStatus``; raises :class:`StatusRejected`."""
    kind = resource.get("resourceType")
    if kind == "SubscriptionStatus":
        events = tuple(
            NotificationEvent(_int(event.get("eventNumber")), _reference(event.get("focus")),
                              _str(event.get("timestamp")))
            for event in _dicts(resource.get("notificationEvent")))
        return BackportStatus(_str(resource.get("type")), _str(resource.get("status")),
                              _reference(resource.get("subscription")), _str(resource.get("topic")),
                              _int(resource.get("eventsSinceSubscriptionStart")), events)
    if kind != "Parameters":
        raise StatusRejected("the first entry is not a subscription status")
    values: dict[str, Any] = {}
    parsed: list[NotificationEvent] = []
    for parameter in _dicts(resource.get("parameter")):
        name = _kebab(parameter.get("name"))
        if name == "notification-event":
            parts = {_kebab(part.get("name")): _value(part) for part in _dicts(parameter.get("part"))}
            parsed.append(NotificationEvent(_int(parts.get("event-number")), _reference(parts.get("focus")),
                                            _str(parts.get("timestamp"))))
        elif name:
            values.setdefault(name, _value(parameter))
    return BackportStatus(_str(values.get("type")), _str(values.get("status")),
                          _reference(values.get("subscription")), _str(values.get("topic")),
                          _int(values.get("events-since-subscription-start")), tuple(parsed))


def event_numbers(status: BackportStatus, mode: GapMode) -> list[int]:
    """The numbers an event notification accounts for, per ``mode``: the events' own numbers
    (``events-since-start``; missing ones are counted back from ``events-since-subscription-start``),
    the Bundle counter (``per-bundle``), or none (``off``)."""
    if mode == "off" or status.type != "event-notification":
        return []
    total = status.events_since_start
    if mode == "per-bundle":
        return [total] if total is not None else []
    numbers = [event.number for event in status.events]
    if all(number is not None for number in numbers) and numbers:
        return sorted({number for number in numbers if number is not None})
    if total is None:
        return []
    count = max(1, len(numbers))
    return list(range(total - count + 1, total + 1))


@dataclass(frozen=True)
class EventCursor:
    """``last``: highest event number up to which every event arrived (``None``: not known yet);
    ``pending``: numbers seen above ``last`` (a gap lies below each of them)."""

    last: int | None = None
    pending: tuple[int, ...] = field(default=())

    @property
    def highest(self) -> int | None:
        return max(self.pending) if self.pending else self.last

    @property
    def has_gap(self) -> bool:
        return bool(self.pending)

    def missing(self) -> tuple[int, int] | None:
        """The first missing range ``(from, to)`` inclusive, if any."""
        if not self.pending:
            return None
        return (self.last or 0) + 1, min(self.pending) - 1

    def seen(self, numbers: list[int]) -> EventCursor:
        """The cursor after ``numbers`` arrived; a number at or below ``last`` is a repeat."""
        last, pending = self.last, set(self.pending)
        for number in numbers:
            if last is None:
                last = number  # the first number after a (re)start is the baseline
            elif number > last:
                pending.add(number)
        while last is not None and last + 1 in pending:
            last += 1
            pending.discard(last)
        pending = {number for number in pending if last is None or number > last}
        if len(pending) > _MAX_PENDING:
            pending = set(sorted(pending)[-_MAX_PENDING:])
        return EventCursor(last, tuple(sorted(pending)))

    def behind(self, reported: int | None) -> bool:
        """True when the server reports more events than this cursor has seen (a heartbeat or
        ``$status`` with a higher ``events-since-subscription-start``)."""
        highest = self.highest
        return reported is not None and highest is not None and reported > highest

    def caught_up(self, through: int | None) -> EventCursor:
        """After a recovery that covered everything up to ``through`` (or to the highest seen)."""
        candidates = [number for number in (through, self.highest) if number is not None]
        return EventCursor(max(candidates) if candidates else None, ())

    def encode_pending(self) -> str:
        return ",".join(str(number) for number in self.pending)

    @classmethod
    def decode(cls, last: int | None, pending: str | None) -> EventCursor:
        numbers = tuple(sorted(int(part) for part in (pending or "").split(",") if part.strip().isdigit()))
        return cls(last, numbers)


def _kebab(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    return re.sub(r"(?<=[a-z])([A-Z])", lambda m: "-" + m.group(1).lower(), name)


def _value(parameter: dict[str, Any]) -> Any:
    for key, value in parameter.items():
        if key.startswith("value"):
            return value
    return None


def _reference(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("reference")
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
