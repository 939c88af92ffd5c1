"""The numbers behind the console's charts: one grouped, counts-only query per figure.

Each function runs one SQL statement that groups in the database and returns counts only — never an
identifier, reference, phone number or message content — over the tables where each fact lives:

- the delivery funnel per template and language: :class:`~adapter.outbox.tables.OutboxMessage`
  (``state`` sent, Meta's ``delivery_status`` delivered / read, monotonic) and the patients' answers,
  :class:`~adapter.conversation.tables.ActionRequest` (``confirm``, ``cancel``, ``reschedule_*``);
- daily volumes: outbox rows sent per day;
- error codes over time: Meta's error codes of the synchronous send attempts
  (:class:`~adapter.outbox.tables.SendAttempt`) and of ``failed`` status webhooks
  (:class:`~adapter.outbox.tables.WhatsAppStatus`);
- reminder effect: reminder rows (natural key ``reminder:<appointment>:<start>:<minutes>m``,
  :mod:`adapter.scheduling.reminders`) by offset, and the answers that followed them;
- link opens: the portal links' access log (:class:`portal_links.tables.LinkRequest`).

An answer (confirm, cancel, reschedule) counts for the last template message about that appointment
sent before it, so a confirmation after the 2-hour reminder is not credited to the 2-day one too.
Days are UTC days on both databases (:class:`utc_day`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, FromClause, String, and_, case, func, literal_column, select, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session

from adapter.conversation.tables import ActionRequest
from adapter.outbox.tables import OutboxMessage, SendAttempt, WhatsAppStatus
from adapter.scheduling.reminders import KEY_PREFIX
from adapter.storage.db import table_of, utcnow
from portal_links.tables import LinkRequest

MAX_DAYS = 92  # a quarter: the widest range a chart stays readable at (one bar per day)
FUNNEL_STAGES = ("queued", "sent", "delivered", "read", "confirmed", "cancelled", "rescheduled")
ANSWERS = {"confirmed": ("confirm",), "cancelled": ("cancel",),
           "rescheduled": ("reschedule_offer", "reschedule_pick")}
# Link request outcomes (portal_links.store), grouped as the chart shows them.
LINK_GROUPS = {"opened": "opened", "preview": "preview", "expired": "refused", "revoked": "refused",
               "exhausted": "refused", "unknown": "blocked", "malformed": "blocked", "rate_limited": "blocked"}
LINK_SERIES = ("opened", "preview", "refused", "blocked")

_outbox = table_of(OutboxMessage)
_action = table_of(ActionRequest)
_attempt = table_of(SendAttempt)
_status = table_of(WhatsAppStatus)
_link = table_of(LinkRequest)


def utc_today() -> date:
    return utcnow().date()


class RangeError(ValueError):
    """A date range the dashboard refuses: reversed, or wider than :data:`MAX_DAYS`."""


class utc_day(FunctionElement[str]):  # a SQL function, named like one
    """``YYYY-MM-DD`` of a timestamp, in UTC, as text on both databases. SQLite stores UTC text, so
    ``date()`` is the UTC day; PostgreSQL's ``timestamptz`` would otherwise follow the session zone."""

    type = String()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "sqlite")
def _sqlite_day(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _postgresql_day(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"to_char(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@dataclass(frozen=True)
class Window:
    """Whole UTC days, ``first`` to ``last`` inclusive."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise RangeError("the range ends before it starts")
        if (self.last - self.first).days + 1 > MAX_DAYS:
            raise RangeError(f"the range is longer than {MAX_DAYS} days")

    @classmethod
    def last_days(cls, days: int, today: date | None = None) -> Window:
        end = today or utc_today()
        return cls(end - timedelta(days=days - 1), end)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after ``last``."""
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)

    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def holds(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.start, column < self.end)


@dataclass(frozen=True)
class FunnelRow:
    """One template in one language: how many messages reached each stage (:data:`FUNNEL_STAGES`)."""

    template: str
    language: str
    counts: tuple[int, ...]

    def stage(self, name: str) -> int:
        return self.counts[FUNNEL_STAGES.index(name)]


@dataclass(frozen=True)
class DayVolume:
    day: date
    sent: int
    delivered: int


@dataclass(frozen=True)
class ErrorCount:
    day: date
    code: int
    count: int


@dataclass(frozen=True)
class ReminderEffect:
    """Reminders sent at one offset before the start, and the answers that followed them."""

    offset_minutes: int
    sent: int
    confirmed: int
    cancelled: int

    def rate(self, answered: int) -> float:
        return answered / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class LinkDay:
    day: date
    counts: tuple[int, ...]  # per LINK_SERIES


def _credits(window: Window) -> Any:
    """Per message (appointment and ``sent_at``) that got an answer: 1/0 columns ``confirmed``,
    ``cancelled`` and ``rescheduled``. Each answer goes to the last template message about its
    appointment sent at or before it (the greatest such ``sent_at``), found by a join on the outbox's
    resource index and grouped — not a correlated subquery per message, which SQLite, with no index
    on the answers' appointment, answers in quadratic time. Answers older than the window cannot
    follow a message it holds, so they are not read."""
    answer, before = _action.alias("answer"), _outbox.alias("before")
    kinds = [kind for group in ANSWERS.values() for kind in group]
    # ``state || ''`` keeps the state off SQLite's index choice: with no statistics its planner would read every
    # sent message through ix_outbox_due per answer, instead of the appointment's through ix_outbox_resource_rule.
    matched = and_(before.c.resource_ref == answer.c.resource_ref, before.c.state.concat("") == "sent",
                   before.c.template_name.is_not(None), before.c.sent_at <= answer.c.created_at)
    answered = (select(answer.c.id, answer.c.kind, answer.c.resource_ref, func.max(before.c.sent_at).label("sent_at"))
                .select_from(answer.join(before, matched))
                .where(answer.c.kind.in_(kinds), answer.c.created_at >= window.start)
                .group_by(answer.c.id, answer.c.kind, answer.c.resource_ref)).subquery("answered")
    flags = [func.max(case((answered.c.kind.in_(group), 1), else_=0)).label(name) for name, group in ANSWERS.items()]
    return (select(answered.c.resource_ref, answered.c.sent_at, *flags)
            .group_by(answered.c.resource_ref, answered.c.sent_at)).subquery("credits")


def _credited(message: FromClause, credits: Any) -> Any:
    """``message`` with its answers, if any (one credits row at most per message)."""
    return message.outerjoin(credits, and_(credits.c.resource_ref == message.c.resource_ref,
                                           credits.c.sent_at == message.c.sent_at))


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def funnel(session: Session, window: Window, now: datetime | None = None) -> list[FunnelRow]:
    """Template messages queued in the window, per template and language; not those suppressed (they never
    were to go) nor those planned for later and not tried yet (a reminder days ahead is not in the funnel)."""
    message = _outbox.alias("message")
    planned = and_(message.c.state == "queued", message.c.attempts == 0, message.c.due_at > (now or utcnow()))
    sent = message.c.state == "sent"
    stages = [func.count(), _count(sent), _count(and_(sent, message.c.delivery_status.in_(("delivered", "read")))),
              _count(and_(sent, message.c.delivery_status == "read"))]
    credits = _credits(window)
    stages += [_count(and_(sent, credits.c[name] == 1)) for name in ANSWERS]
    statement = (select(message.c.template_name, message.c.template_language, *stages)
                 .select_from(_credited(message, credits))
                 .where(message.c.template_name.is_not(None), message.c.state != "suppressed", ~planned,
                        window.holds(message.c.created_at))
                 .group_by(message.c.template_name, message.c.template_language)
                 .order_by(message.c.template_name, message.c.template_language))
    return [FunnelRow(name, language or "", tuple(int(n) for n in counts))
            for name, language, *counts in session.execute(statement)]


def daily_volumes(session: Session, window: Window) -> list[DayVolume]:
    """Messages of every kind sent per day (still sent: a failed status takes one back), and how many
    of each day's were delivered; every day of the window, zero included."""
    day = utc_day(_outbox.c.sent_at).label("day")
    delivered = _outbox.c.delivery_status.in_(("delivered", "read"))
    statement = (select(day, func.count(), _count(delivered))
                 .where(_outbox.c.state == "sent", window.holds(_outbox.c.sent_at)).group_by(day))
    found = {date.fromisoformat(text): (int(sent), int(done)) for text, sent, done in session.execute(statement)}
    return [DayVolume(d, *found.get(d, (0, 0))) for d in window.days()]


def error_codes(session: Session, window: Window) -> list[ErrorCount]:
    """Meta error codes per day: refused sends (the API's answer) and ``failed`` statuses (later)."""
    refused = select(utc_day(_attempt.c.started_at).label("day"), _attempt.c.error_code.label("code")).where(
        _attempt.c.error_code.is_not(None), window.holds(_attempt.c.started_at))
    failed = select(utc_day(_status.c.received_at).label("day"), _status.c.error_code.label("code")).where(
        _status.c.status == "failed", _status.c.error_code.is_not(None), window.holds(_status.c.received_at))
    both = union_all(refused, failed).subquery("errors")
    statement = (select(both.c.day, both.c.code, func.count()).group_by(both.c.day, both.c.code)
                 .order_by(both.c.day, both.c.code))
    return [ErrorCount(date.fromisoformat(day), int(code), int(n)) for day, code, n in session.execute(statement)]


def _offset_text(key: Any) -> Any:
    """What follows the key's last ``:`` (``2880m``). Neither database has a portable "last index of":
    ``rtrim`` by every character except ``:`` leaves the key up to its last ``:``, on both. The
    constants are inlined so PostgreSQL sees one expression (a bound parameter would be a new one)."""
    head = func.rtrim(key, func.replace(key, literal_column("':'"), literal_column("''")))
    return func.substr(key, func.length(head) + 1)


def reminder_effect(session: Session, window: Window) -> list[ReminderEffect]:
    """Reminders sent in the window, per offset: how many, and how many answers of each kind followed."""
    message, credits = _outbox.alias("message"), _credits(window)
    rows = (select(_offset_text(message.c.natural_key).label("offset"),
                   func.coalesce(credits.c.confirmed, 0).label("confirmed"),
                   func.coalesce(credits.c.cancelled, 0).label("cancelled"))
            .select_from(_credited(message, credits))
            .where(message.c.natural_key.startswith(KEY_PREFIX, autoescape=True), message.c.state == "sent",
                   window.holds(message.c.sent_at))).subquery("reminders")
    statement = (select(rows.c.offset, func.count(), func.sum(rows.c.confirmed), func.sum(rows.c.cancelled))
                 .group_by(rows.c.offset))
    found = [(_minutes(offset), int(sent), int(confirmed or 0), int(cancelled or 0))
             for offset, sent, confirmed, cancelled in session.execute(statement)]
    return sorted((ReminderEffect(m, s, c, x) for m, s, c, x in found if m is not None),
                  key=lambda effect: -effect.offset_minutes)


def _minutes(offset: str | None) -> int | None:
    text = (offset or "").removesuffix("m")
    return int(text) if text.isdigit() else None


def link_opens(session: Session, window: Window) -> list[LinkDay]:
    """Portal link requests per day: opened (the patient's tap, POST), preview (a GET before it: a
    link preview or the neutral page), refused (expired, revoked, used up) and blocked (forged,
    malformed, rate-limited); every day of the window."""
    day = utc_day(_link.c.at).label("day")
    statement = (select(day, _link.c.outcome, func.count()).where(window.holds(_link.c.at))
                 .group_by(day, _link.c.outcome))
    return _link_days(window.days(), session.execute(statement))


def _link_days(days: Iterable[date], rows: Iterable[Any]) -> list[LinkDay]:
    totals: dict[tuple[date, str], int] = {}
    for text, outcome, n in rows:
        key = (date.fromisoformat(text), LINK_GROUPS.get(outcome, "blocked"))
        totals[key] = totals.get(key, 0) + int(n)
    return [LinkDay(d, tuple(totals.get((d, series), 0) for series in LINK_SERIES)) for d in days]
