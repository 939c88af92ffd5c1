"""Forgetting what the service decided about a resource, so that a replay decides it anew.

A replay re-reads a resource from the EHR and runs the rules again (``bridge replay``, the console's
replay page). What would stop the rules from firing is forgotten in the caller's transaction: the
version already decided (:class:`~adapter.feeds.tables.ResourceState`), dead letters whose body was
never built (blocked before one was), and the skips recorded for it — the decision records them again
if they still hold; a skip is keyed by rule, resource, version and reason, so the old row would refuse
the new one. Messages already sent stay: their natural keys keep them from going twice.
"""

from __future__ import annotations

from sqlmodel import Session, col, delete

from adapter.feeds.tables import ResourceState
from adapter.outbox.tables import NotificationSkip, OutboxMessage


def forget_decisions(session: Session, resource_type: str, resource_id: str) -> None:
    reference = f"{resource_type}/{resource_id}"
    session.exec(delete(OutboxMessage).where(
        col(OutboxMessage.resource_ref) == reference, col(OutboxMessage.state) == "dead",
        col(OutboxMessage.payload).is_(None)))
    session.exec(delete(NotificationSkip).where(col(NotificationSkip.resource_ref) == reference))
    session.exec(delete(ResourceState).where(
        col(ResourceState.resource_type) == resource_type, col(ResourceState.resource_id) == resource_id))
