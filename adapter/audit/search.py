"""Searching the audit trail with FHIR-style parameters (https://hl7.org/fhir/R4/search.html and the
AuditEvent search parameters, https://hl7.org/fhir/R4/auditevent.html#search).

Supported: ``date`` (repeatable; prefixes ``eq ge gt le lt``; a date ``2026-11-25`` or an instant),
``patient`` (a reference), ``entity`` (a reference: the patient or the data entity), ``agent`` (the
agent name, e.g. ``user:alice``), ``type`` and ``subtype`` (a BALP/DICOM code, ``system|code``, or
our kind, e.g. ``link-access``), ``outcome``, ``action``, ``_count`` (default 100, at most 1000) and
``_offset`` (paging: results are in record order, ``id`` ascending, so offsets are stable while new
records only ever append). A value over 200 characters, a date outside 0001-01-01 .. 9999-12-31
(in UTC) and anything else is refused with :class:`AuditQueryError` (the API answers
400 with an OperationOutcome), because silently ignoring a filter would show an auditor more than
they asked for and let them believe it was filtered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from adapter.audit.balp import kinds_for_code
from adapter.audit.tables import AuditChain, AuditEvent
from adapter.storage.db import table_of

DEFAULT_COUNT = 100
MAX_COUNT = 1000
MAX_VALUE_CHARS = 200  # AuditEvent.patient_ref's length, the shortest column a value is compared with and kept in
KNOWN = frozenset({"date", "patient", "entity", "agent", "type", "subtype", "outcome", "action", "_count",
                   "_offset", "_format"})
_PREFIXES = ("eq", "ge", "gt", "le", "lt")


class AuditQueryError(ValueError):
    """A search parameter is unknown or its value malformed; the message names the parameter."""


@dataclass(frozen=True)
class AuditRow:
    """One audit record with its chain position (``seq``/``hash`` are None until it is chained)."""

    event: AuditEvent
    seq: int | None
    hash: bytes | None


@dataclass(frozen=True)
class AuditQuery:
    """Parsed parameters; ``pairs`` keeps the original ones (for paging links and the audit of the query)."""

    pairs: tuple[tuple[str, str], ...]
    conditions: list[Any] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0


def _instant(text: str, name: str) -> tuple[datetime, datetime]:
    """The half-open range ``[start, end)`` a date or instant stands for."""
    try:
        if len(text) == 10:
            start = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return start, start + timedelta(days=1)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)  # the database compares in UTC
        return at, at + timedelta(microseconds=1)
    except ValueError as exc:
        raise AuditQueryError(f"{name}: {text[:40]!r} is not a date (YYYY-MM-DD) or an instant") from exc
    except OverflowError as exc:  # in UTC, or one step on, it falls outside 0001-01-01 .. 9999-12-31
        raise AuditQueryError(f"{name}: {text[:40]!r} is outside the supported dates") from exc


def _date_condition(value: str) -> Any:
    prefix, text = (value[:2], value[2:]) if value[:2] in _PREFIXES else ("eq", value)
    start, end = _instant(text, "date")
    at = col(AuditEvent.recorded_at)
    return {"eq": (at >= start) & (at < end), "ge": at >= start, "gt": at >= end, "le": at < end,
            "lt": at < start}[prefix]


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise AuditQueryError(f"{name}: {value[:20]!r} is not a whole number") from exc
    if not low <= number <= high:
        raise AuditQueryError(f"{name}: must be between {low} and {high}")
    return number


def parse_query(pairs: Sequence[tuple[str, str]]) -> AuditQuery:
    """Checks and translates the parameters; raises :class:`AuditQueryError`."""
    conditions: list[Any] = []
    count, offset = DEFAULT_COUNT, 0
    by_name: dict[str, list[str]] = {}
    for name, value in pairs:
        if name not in KNOWN:
            raise AuditQueryError(f"unknown search parameter {name[:40]!r}; known: {', '.join(sorted(KNOWN))}")
        if not value:
            raise AuditQueryError(f"{name}: empty value")
        if len(value) > MAX_VALUE_CHARS:  # no stored reference is longer; the query's own audit keeps it
            raise AuditQueryError(f"{name}: longer than {MAX_VALUE_CHARS} characters")
        by_name.setdefault(name, []).append(value)
    for name, values in by_name.items():
        if name == "date":
            conditions.extend(_date_condition(value) for value in values)
        elif name == "_count":
            count = _int(values[-1], name, 0, MAX_COUNT)
        elif name == "_offset":
            offset = _int(values[-1], name, 0, 10**9)
        elif name in ("type", "subtype"):
            for value in values:  # each repetition is ANDed; commas within one are ORed (FHIR search)
                kinds = set().union(*(kinds_for_code(code) for code in value.split(",")))
                conditions.append(col(AuditEvent.kind).in_(sorted(kinds)))
        elif name != "_format":
            column = {"patient": AuditEvent.patient_ref, "agent": AuditEvent.agent, "outcome": AuditEvent.outcome,
                      "action": AuditEvent.action}.get(name)
            for value in values:
                options = value.split(",")
                if column is not None:
                    conditions.append(col(column).in_(options))
                else:  # entity: the patient or the data entity
                    conditions.append(or_(col(AuditEvent.patient_ref).in_(options),
                                          col(AuditEvent.entity_ref).in_(options)))
    return AuditQuery(tuple(pairs), conditions, count, offset)


def _as_query(params: AuditQuery | Sequence[tuple[str, str]]) -> AuditQuery:
    return params if isinstance(params, AuditQuery) else parse_query(params)


def _select(query: AuditQuery) -> Any:
    statement = (select(AuditEvent, AuditChain.seq, AuditChain.hash)
                 .join(AuditChain, col(AuditChain.event_id) == col(AuditEvent.id), isouter=True))
    for condition in query.conditions:
        statement = statement.where(condition)
    return statement


def search_audit(session: Session, params: AuditQuery | Sequence[tuple[str, str]]) -> tuple[list[AuditRow], int]:
    """One page of matching records (record order) and the total number of matches."""
    query = _as_query(params)
    count_statement = select(func.count()).select_from(AuditEvent)
    for condition in query.conditions:
        count_statement = count_statement.where(condition)
    total = int(session.exec(count_statement).one())
    rows: list[AuditRow] = []
    if query.count:
        page = session.exec(_select(query).order_by(col(AuditEvent.id)).offset(query.offset).limit(query.count))
        rows = [AuditRow(event, seq, digest) for event, seq, digest in page]
    return rows, total


EXPORT_COLUMNS = ("seq", "hash", "id", "recorded_at", "kind", "action", "outcome", "agent", "agent_role", "source",
                  "patient_ref", "entity_ref", "purpose", "detail")


def iter_audit_values(session: Session, params: AuditQuery | Sequence[tuple[str, str]],
                      batch: int = 5000) -> Iterator[tuple[Any, ...]]:
    """Like :func:`iter_audit`, as plain tuples in :data:`EXPORT_COLUMNS` order: no ORM objects, so
    exports of 100k+ rows cost a fraction of the time and memory."""
    query = _as_query(params)
    events = table_of(AuditEvent)
    columns = [col(AuditChain.seq), col(AuditChain.hash), *(events.c[name] for name in EXPORT_COLUMNS[2:])]
    last = 0
    while True:
        statement = (select(*columns).select_from(events)
                     .join(AuditChain, col(AuditChain.event_id) == events.c.id, isouter=True)
                     .where(*query.conditions, events.c.id > last).order_by(events.c.id).limit(batch))
        page = session.execute(statement).all()
        yield from (tuple(row) for row in page)
        if len(page) < batch:
            return
        last = int(page[-1][2])


def iter_audit(session: Session, params: AuditQuery | Sequence[tuple[str, str]],
               batch: int = 2000) -> Iterator[AuditRow]:
    """Every matching record (ignoring ``_count``/``_offset``), read in keyset batches on ``id`` so a
    100k-row export neither holds them all nor pays for deep offsets."""
    query = _as_query(params)
    last = 0
    while True:
        statement = _select(query).where(col(AuditEvent.id) > last).order_by(col(AuditEvent.id)).limit(batch)
        page = list(session.exec(statement))
        for event, seq, digest in page:
            session.expunge(event)  # a 100k-row export must not keep every row in the identity map
            yield AuditRow(event, seq, digest)
        if len(page) < batch:
            return
        last = int(page[-1][0].id)
