"""``GET /metrics``: Prometheus text exposition
(https://prometheus.io/docs/instrumenting/exposition_formats/) of this process's counters
(:mod:`adapter.ops.metrics`, plus prometheus-client's process and Python collectors) and of gauges
read from the database at scrape time (:class:`DatabaseCollector`).

The database gauges are the same from any instance (they read the shared database); the counters are
each process's own. Scrape every instance: sum the counters, take any one instance's gauges.

A scrape reads only rows in work or small tables, through the partial indexes the claims use
(:mod:`adapter.storage.claimable`), so its cost follows the work in hand, not the history. Like
``/health`` it shows counts, states, template names, error codes and feed keys: no identifier.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import CompoundSelect, case, func, literal, select, union_all
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.checkpoints import audit_status
from adapter.conversation.tables import ActionRequest, InboundMessage
from adapter.feeds.backport_monitor import feed_health as backport_feed_health
from adapter.feeds.health import UP_STATUSES
from adapter.feeds.tables import INBOX_CLAIMABLE, FeedState, InboxEvent
from adapter.ops.alerts import count_open
from adapter.ops.metrics import observe_ehr_call, observe_ehr_webhook
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.tables import OUTBOX_CLAIMABLE, OutboxMessage, TemplateState, WhatsAppStatus
from adapter.storage.claimable import in_states
from adapter.storage.db import table_of, utcnow
from ehr.intake import observe_intake
from ehr.transport import observe_calls

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUES = ("inbox", "outbox", "statuses", "inbound", "actions")


class DatabaseCollector(Collector):
    """Gauges read from the database at each scrape: about a dozen cheap statements (README, "Metrics")."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the families are built at each scrape

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bridge_metrics_database_up", "1 when the scrape could read the database.")
        try:
            families = list(self._read(utcnow()))
        except Exception as error:  # the process counters still go out; this gauge says why the rest is missing
            log.warning("Metrics: the database could not be read (%s)", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self, now: datetime) -> Iterable[Metric]:
        with Session(self.engine) as session:
            yield from _outbox(session, now)
            yield from _queues(session, now)
            yield from _feeds(session, self.engine, now)
            yield from _audit(session)
            alerts = GaugeMetricFamily("bridge_open_alerts", "Operator alerts not yet acknowledged.", labels=["kind"])
            for kind, count in sorted(count_open(session).items()):
                alerts.add_metric([kind], count)
            yield alerts
            templates = GaugeMetricFamily("bridge_templates", "Message templates by review status.",
                                          labels=["status"])
            states = table_of(TemplateState).c
            for status, count in session.execute(select(states.status, func.count()).group_by(states.status)).all():
                templates.add_metric([status], count)
            yield templates
        paused = GaugeMetricFamily("bridge_sending_paused", "1 while sending is paused (an account-level error).")
        paused.add_metric([], 1 if sending_paused(self.engine) is not None else 0)
        yield paused


def _template(template_name: str | None, body_type: str | None) -> str:
    return template_name or body_type or "unknown"  # as adapter.ops.metrics.count_sends labels it


def _outbox(session: Session, now: datetime) -> Iterable[Metric]:
    """In-flight messages (queued or sending) by state and template through the claimable index, and the
    dead letters by template (through the state index: as many rows as dead letters kept)."""
    outbox = table_of(OutboxMessage).c
    messages = GaugeMetricFamily("bridge_outbox_messages", "Messages queued or sending, by state and template "
                                 "(queued includes reminders planned for later).", labels=["state", "template"])
    counts: Counter[tuple[str, str]] = Counter()
    for state, name, body_type, count in session.execute(
            select(outbox.state, outbox.template_name, outbox.body_type, func.count())
            .where(in_states(outbox.state, OUTBOX_CLAIMABLE))
            .group_by(outbox.state, outbox.template_name, outbox.body_type)).all():
        counts[(state, _template(name, body_type))] += count
    for (state, template), count in sorted(counts.items()):
        messages.add_metric([state, template], count)
    yield messages
    dead = GaugeMetricFamily("bridge_outbox_dead_letters", "Dead letters kept (visible, re-drivable), by template.",
                             labels=["template"])
    buried: Counter[str] = Counter()
    for name, body_type, count in session.execute(
            select(outbox.template_name, outbox.body_type, func.count())
            .where(in_states(outbox.state, ("dead",))).group_by(outbox.template_name, outbox.body_type)).all():
        buried[_template(name, body_type)] += count
    for template, count in sorted(buried.items()):
        dead.add_metric([template], count)
    yield dead


def queue_statement(now: datetime) -> CompoundSelect:
    """(queue, depth, oldest) for each work queue, in one statement, each part answerable from the index
    its claim reads. The outbox counts what is due now (or being sent), not reminders planned for later."""
    inbox, outbox = table_of(InboxEvent).c, table_of(OutboxMessage).c
    statuses, inbound, actions = table_of(WhatsAppStatus).c, table_of(InboundMessage).c, table_of(ActionRequest).c
    due = (outbox.state == literal("sending", literal_execute=True)) | (outbox.due_at <= now)
    return union_all(
        select(literal("inbox"), func.count(), func.min(inbox.received_at))
        .where(in_states(inbox.state, INBOX_CLAIMABLE)),
        select(literal("outbox"), func.coalesce(func.sum(case((due, 1), else_=0)), 0), func.min(outbox.due_at))
        .where(in_states(outbox.state, OUTBOX_CLAIMABLE)),
        select(literal("statuses"), func.count(), func.min(statuses.received_at)).where(statuses.applied_at.is_(None)),
        select(literal("inbound"), func.count(), func.min(inbound.received_at))
        .where(in_states(inbound.state, ("pending",))),
        select(literal("actions"), func.count(), func.min(actions.created_at))
        .where(in_states(actions.state, ("pending",))))


def _queues(session: Session, now: datetime) -> Iterable[Metric]:
    """Each work queue's depth and its oldest waiting item's age."""
    depth = GaugeMetricFamily("bridge_queue_depth", "Items waiting in each work queue.", labels=["queue"])
    age = GaugeMetricFamily("bridge_queue_oldest_age_seconds", "Age of each queue's oldest waiting item (for the "
                            "outbox: how overdue its most overdue message is); 0 when empty.", labels=["queue"])
    for queue, count, oldest in sorted(session.execute(queue_statement(now)).all()):
        depth.add_metric([queue], int(count or 0))
        age.add_metric([queue], max(0.0, (now - _aware(oldest)).total_seconds()) if oldest is not None else 0.0)
    yield depth
    yield age


def _feeds(session: Session, engine: Engine, now: datetime) -> Iterable[Metric]:
    """One row per feed (configured subscriptions, polls, Backport topics): a small table each."""
    up = GaugeMetricFamily("bridge_feed_up", "1 when the feed's Subscription is active or its last poll succeeded; "
                           "for Backport feeds, active with no event-number gap.", labels=["feed", "kind"])
    last_ok = GaugeMetricFamily("bridge_feed_last_ok_age_seconds", "Seconds since the feed last worked.",
                                labels=["feed", "kind"])
    feeds = table_of(FeedState).c
    for row in session.execute(select(feeds.feed, feeds.kind, feeds.status, feeds.last_ok_at)
                               .order_by(feeds.feed)).all():
        up.add_metric([row.feed, row.kind], 1 if row.status in UP_STATUSES else 0)
        if row.last_ok_at is not None:
            last_ok.add_metric([row.feed, row.kind], max(0.0, (now - _aware(row.last_ok_at)).total_seconds()))
    for feed in backport_feed_health(engine):
        up.add_metric([f"backport:{feed['feed']}", "backport"], 1 if feed["healthy"] else 0)
    yield up
    yield last_ok


def _audit(session: Session) -> Iterable[Metric]:
    status = audit_status(session)
    pending = GaugeMetricFamily("bridge_audit_chain_pending", "Audit records written but not yet chained (the "
                                "chain's lag; growing means the chaining step is not running).")
    pending.add_metric([], status["pending"])
    unsigned = GaugeMetricFamily("bridge_audit_unsigned", "Chained audit records after the last signed checkpoint.")
    unsigned.add_metric([], status["chained"] - (status["checkpoint_seq"] or 0))
    yield pending
    yield unsigned


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _ProcessCollector(Collector):
    """This process's default registry (adapter.ops.metrics, process and Python collectors), inside an
    app's own registry: several apps in one process (tests) each expose it once, beside their own database."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return iter(REGISTRY.collect())


def build_metrics_router(engine: Engine) -> APIRouter:
    """``GET /metrics``, without auth (README, "Metrics": counts only; restrict it at the proxy)."""
    observe_calls(observe_ehr_call)  # the EHR client's port: its calls' latency and errors
    observe_intake(observe_ehr_webhook)  # the EHR's notifications: intake latency by status answered
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessCollector())
    registry.register(DatabaseCollector(engine))
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(await asyncio.to_thread(generate_latest, registry), media_type=CONTENT_TYPE)

    return router
