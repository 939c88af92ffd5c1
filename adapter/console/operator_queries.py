"""What the operator pages read: the same reads as ``/health`` (:mod:`adapter.http.health`) and ``/metrics``
(:mod:`adapter.http.metrics`'s one queue statement), plus the lists the CLI prints (dead letters, skips,
templates, consent) shaped for a page, and the front desk's counters (questions that found no approved answer,
per language and day; answers served and their "was this helpful?" taps, per entry and version).

Counts, states, codes, rule names and FHIR references of resources and Tasks: never a phone number or a
message's content. The open hand-offs come from :class:`adapter.conversation.tables.Conversation`, whose key
is a number's blind index: only the Task and the times are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.answers import unanswered_counts
from adapter.conversation.tables import Conversation, FrontDeskEvent
from adapter.http.metrics import QUEUES, queue_statement
from adapter.outbox.circuit_breaker import HELD_CLASSES
from adapter.outbox.tables import NotificationSkip, OutboxMessage, TemplateState
from adapter.recipients.contacts import window_open
from adapter.recipients.tables import ConsentRecord, WhatsAppContact
from adapter.storage.db import utcnow

WHAT_WAITS = {"inbox": "EHR notifications to decide", "outbox": "messages due to send (or sending)",
              "statuses": "delivery statuses to apply", "inbound": "patients' messages to answer",
              "actions": "patients' requests to write to the EHR"}


@dataclass(frozen=True)
class QueueAge:
    """One work queue: how many items wait and how long the oldest has (seconds; None when empty)."""

    name: str
    what: str
    depth: int
    oldest_seconds: float | None


@dataclass(frozen=True)
class SkipCount:
    rule_id: str
    reason: str
    count: int
    last_at: datetime


@dataclass(frozen=True)
class HandOff:
    task_ref: str | None
    since: datetime
    until: datetime


@dataclass(frozen=True)
class ConsentView:
    """A patient's opt-in as the registry holds it, and how many WhatsApp numbers are on file (never the
    numbers themselves)."""

    patient_ref: str
    status: str | None
    source: str | None
    changed_at: datetime | None
    numbers: int
    window_open: bool


@dataclass(frozen=True)
class AnswerCount:
    """One approved answer (``<entry id>@<version>``): how often it was served, and the feedback taps."""

    entry: str
    served: int
    helpful: int
    unhelpful: int


@dataclass(frozen=True)
class FrontDeskReport:
    """The front desk over the last ``days`` days: counts only, never a question's text or a patient."""

    days: int
    unanswered: list[tuple[str, str, int]]  # (UTC day, language, questions that found nothing), newest first
    answers: list[AnswerCount]


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything this service stores is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def queue_ages(engine: Engine, now: datetime | None = None) -> list[QueueAge]:
    """Each work queue's depth and oldest item's age, from the statement ``/metrics`` runs."""
    now = now or utcnow()
    with Session(engine) as session:
        found = {queue: (int(count or 0), oldest) for queue, count, oldest in session.execute(queue_statement(now))}
    rows = []
    for queue in QUEUES:
        depth, oldest = found.get(queue, (0, None))
        age = max(0.0, (now - aware(oldest)).total_seconds()) if oldest is not None and depth else None
        rows.append(QueueAge(queue, WHAT_WAITS[queue], depth, age))
    return rows


def held_by_pause(engine: Engine) -> int:
    """Queued messages a pause held back (:data:`adapter.outbox.circuit_breaker.HELD_CLASSES`): those a
    resume sends at once, besides the ones that came due meanwhile."""
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(OutboxMessage).where(
            col(OutboxMessage.state) == "queued", col(OutboxMessage.last_error_class).in_(HELD_CLASSES))).one())


def skip_counts(engine: Engine, limit: int = 200) -> list[SkipCount]:
    """Notifications not sent, counted by rule and reason (no resource, no patient)."""
    with Session(engine) as session:
        rows = session.exec(select(NotificationSkip.rule_id, NotificationSkip.reason, func.count(),
                                   func.max(NotificationSkip.created_at))
                            .group_by(col(NotificationSkip.rule_id), col(NotificationSkip.reason))
                            .order_by(func.count().desc()).limit(limit)).all()
    return [SkipCount(rule, reason, int(count), aware(last)) for rule, reason, count, last in rows]


def template_states(engine: Engine) -> list[TemplateState]:
    with Session(engine) as session:
        return list(session.exec(select(TemplateState).order_by(col(TemplateState.name),
                                                                col(TemplateState.language))))


def open_handoffs(engine: Engine, now: datetime | None = None, limit: int = 200) -> list[HandOff]:
    """Conversations staff hold now (the bot is silent until the Task is done or the hand-off times out)."""
    now = now or utcnow()
    with Session(engine) as session:
        rows = session.exec(select(Conversation.handoff_task, Conversation.updated_at, Conversation.handoff_until)
                            .where(col(Conversation.handoff_until) > now)
                            .order_by(col(Conversation.handoff_until)).limit(limit)).all()
    return [HandOff(task, aware(since), aware(until)) for task, since, until in rows if until is not None]


def outbox_row(engine: Engine, outbox_id: int) -> OutboxMessage | None:
    with Session(engine) as session:
        return session.get(OutboxMessage, outbox_id)


def consent_of(engine: Engine, patient_ref: str, now: datetime | None = None) -> ConsentView:
    now = now or utcnow()
    with Session(engine) as session:
        record = session.get(ConsentRecord, patient_ref)
        numbers, last_inbound = session.exec(
            select(func.count(), func.max(WhatsAppContact.last_inbound_at))
            .where(col(WhatsAppContact.patient_ref) == patient_ref)).one()
    return ConsentView(patient_ref, record.status if record else None, record.source if record else None,
                       aware(record.changed_at) if record else None, int(numbers or 0),
                       window_open(aware(last_inbound) if last_inbound else None, now))


def front_desk_report(engine: Engine, days: int = 30, now: datetime | None = None) -> FrontDeskReport:
    """Questions that found no approved answer (:func:`adapter.conversation.answers.unanswered_counts`) and
    the answers served with their feedback, from the ``front_desk_event`` counters."""
    since = (now or utcnow()) - timedelta(days=days)
    with Session(engine) as session:
        unanswered = unanswered_counts(session, since)
        rows = session.exec(select(FrontDeskEvent.entry, FrontDeskEvent.kind, func.count())
                            .where(col(FrontDeskEvent.at) >= since, col(FrontDeskEvent.entry).is_not(None),
                                   col(FrontDeskEvent.kind).in_(("answered", "helpful", "unhelpful")))
                            .group_by(col(FrontDeskEvent.entry), col(FrontDeskEvent.kind))).all()
    counts: dict[str, dict[str, int]] = {}
    for entry, kind, count in rows:
        counts.setdefault(str(entry), {})[kind] = int(count)
    answers = [AnswerCount(entry, c.get("answered", 0), c.get("helpful", 0), c.get("unhelpful", 0))
               for entry, c in counts.items()]
    answers.sort(key=lambda a: (-a.served, a.entry))
    by_day = [(key.split("/", 1)[1], key.split("/", 1)[0], n) for key, n in unanswered.items()]
    by_day.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return FrontDeskReport(days, by_day, answers)
