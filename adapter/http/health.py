"""The ``/health`` report: counts and states of the inbox, outbox, inbound messages, alerts,
templates, audit chain, feeds and subscriptions, and whether sending is paused. No identifiers, no PHI.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from adapter.audit.checkpoints import audit_status
from adapter.conversation.tables import InboundMessage
from adapter.feeds.tables import InboxEvent
from adapter.feeds.tasks import feeds_health
from adapter.ops.alerts import count_open
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.tables import OutboxMessage, TemplateState
from adapter.service import Service


def health(service: Service) -> dict[str, Any]:
    """Counts and states only: no identifiers, no PHI."""
    with Session(service.engine) as session:
        outbox = dict(session.exec(select(OutboxMessage.state, func.count()).group_by(col(OutboxMessage.state))).all())
        inbox = dict(session.exec(select(InboxEvent.state, func.count()).group_by(col(InboxEvent.state))).all())
        inbound = dict(session.exec(select(InboundMessage.state, func.count())
                                    .group_by(col(InboundMessage.state))).all())
        alerts = count_open(session)
        templates = dict(session.exec(select(TemplateState.status, func.count())
                                      .group_by(col(TemplateState.status))).all())
        audit = audit_status(session)
    paused = sending_paused(service.engine)
    return {
        "status": "degraded" if paused or alerts else "ok",
        "mode": service.settings.mode,
        "inbox": inbox,
        "outbox": outbox,
        "inbound": inbound,
        "sending_paused": paused is not None,
        "sending_paused_reason": paused.reason if paused else None,
        "sending_paused_since": paused.set_at.isoformat() if paused else None,
        "alerts": alerts,
        "templates": templates,
        "template_sync_error": service.template_sync_error,
        "subscriptions": [{"key": s.key, "status": s.status, "action": s.action} for s in service.subscriptions],
        "subscription_error": service.subscription_error,
        "audit": audit,
        "feeds": feeds_health(service.settings, service.engine),
    }
