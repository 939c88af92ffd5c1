"""Storage for the reminder plan (:mod:`adapter.scheduling.reminders`): reminders are outbox rows, so this adds
only the index that finds one appointment's reminders, which every Appointment version looks up
(migration 0010)."""

from __future__ import annotations

from sqlalchemy import Index

from adapter.outbox.tables import OutboxMessage

OUTBOX_BY_RESOURCE = Index("ix_outbox_resource_rule", OutboxMessage.__table__.c.resource_ref,  # type: ignore[attr-defined]
                           OutboxMessage.__table__.c.rule_id)  # type: ignore[attr-defined]
