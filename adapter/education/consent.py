"""Per-topic consent (:class:`adapter.education.tables.TopicConsent`): subscribing, stopping one topic,
and stopping every topic when the patient sends STOP. Each change is audited by the caller, in the
inbound message's audit entry (the topic and what changed, never the patient's words)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from adapter.education.tables import TopicConsent
from adapter.recipients.consent import OPTED_IN, OPTED_OUT
from adapter.storage.db import utcnow


def set_topic_consent(session: Session, patient_ref: str, topic: str, status: str, source: str) -> bool:
    """Records the patient's choice for ``topic``; True when it changed."""
    if status not in (OPTED_IN, OPTED_OUT):
        raise ValueError(f"topic consent status must be {OPTED_IN} or {OPTED_OUT}")
    row = session.get(TopicConsent, (patient_ref, topic), with_for_update=True)
    if row is not None and row.status == status:
        return False
    row = row or TopicConsent(patient_ref=patient_ref, topic=topic, status=status, source=source,
                              changed_at=utcnow())
    row.status, row.source, row.changed_at = status, source, utcnow()
    session.add(row)
    return True


def subscribed(session: Session, patient_ref: str) -> set[str]:
    """The topics the patient is opted in to."""
    return set(session.exec(select(TopicConsent.topic).where(
        col(TopicConsent.patient_ref) == patient_ref, col(TopicConsent.status) == OPTED_IN)).all())


def stop_all(session: Session, patient_refs: list[str], source: str = "stop") -> int:
    """A global STOP: every topic of these patients opted out (START later does not resubscribe them)."""
    rows = list(session.exec(select(TopicConsent).where(
        col(TopicConsent.patient_ref).in_(patient_refs), col(TopicConsent.status) == OPTED_IN).with_for_update()))
    for row in rows:
        row.status, row.source, row.changed_at = OPTED_OUT, source, utcnow()
        session.add(row)
    return len(rows)
