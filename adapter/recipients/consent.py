"""Opt-in: whether a patient may be messaged, from a configurable source.

``registry`` is the local opt-in table that an admin command (and, later, the chat: START/STOP)
changes; ``assume`` treats everyone as opted in and is refused outside demo mode by settings.
"""

from __future__ import annotations

from typing import Protocol

from sqlmodel import Session, col, select

from adapter.recipients.tables import ConsentRecord
from adapter.storage.db import utcnow

OPTED_IN = "opted_in"
OPTED_OUT = "opted_out"


class ConsentSource(Protocol):
    def may_message(self, session: Session, patient_ref: str) -> bool: ...

    def may_message_many(self, session: Session, patient_refs: list[str]) -> dict[str, bool]: ...


def _statuses(session: Session, patient_refs: list[str]) -> dict[str, str]:
    if not patient_refs:
        return {}
    return dict(session.exec(select(ConsentRecord.patient_ref, ConsentRecord.status)
                             .where(col(ConsentRecord.patient_ref).in_(patient_refs))).all())


class RegistryConsent:
    """Only patients with an ``opted_in`` record in the local registry."""

    def may_message(self, session: Session, patient_ref: str) -> bool:
        return self.may_message_many(session, [patient_ref])[patient_ref]

    def may_message_many(self, session: Session, patient_refs: list[str]) -> dict[str, bool]:
        """One read for a batch of patients."""
        statuses = _statuses(session, patient_refs)
        return {ref: statuses.get(ref) == OPTED_IN for ref in patient_refs}


class AssumedConsent:
    """Everyone, except patients who opted out (STOP is honoured even in the demo)."""

    def may_message(self, session: Session, patient_ref: str) -> bool:
        return self.may_message_many(session, [patient_ref])[patient_ref]

    def may_message_many(self, session: Session, patient_refs: list[str]) -> dict[str, bool]:
        """One read for a batch of patients."""
        statuses = _statuses(session, patient_refs)
        return {ref: statuses.get(ref) != OPTED_OUT for ref in patient_refs}


def consent_source(name: str) -> ConsentSource:
    return AssumedConsent() if name == "assume" else RegistryConsent()


def set_consent(session: Session, patient_ref: str, status: str, source: str) -> ConsentRecord:
    if status not in (OPTED_IN, OPTED_OUT):
        raise ValueError(f"consent status must be {OPTED_IN} or {OPTED_OUT}")
    if not patient_ref.startswith("Patient/") or len(patient_ref) <= len("Patient/"):
        raise ValueError("a patient is named by its FHIR reference, e.g. Patient/123")
    record = session.get(ConsentRecord, patient_ref) or ConsentRecord(
        patient_ref=patient_ref, status=status, source=source, changed_at=utcnow())
    record.status, record.source, record.changed_at = status, source, utcnow()
    session.add(record)
    return record


def list_consent(session: Session) -> list[ConsentRecord]:
    return list(session.exec(select(ConsentRecord).order_by(col(ConsentRecord.patient_ref))))
