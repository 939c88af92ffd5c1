"""Writing audit entries: :func:`record` adds them to the caller's session, so an entry commits or
rolls back with the action it records (45 CFR 164.312(b) audit controls).

Entries hold references only — ``Patient/123``, ``Appointment/9/_history/4``, ``link/42``,
``message/<wamid>``, ``outbox/17`` — never a phone number, token, name or free text. ``detail`` is
a small JSON object of codes and counts; :func:`record` refuses values that look like phone numbers
or long free text, because an audit trail kept six years must not become a PHI store.

The kinds map to IHE BALP profiles when exported (:mod:`adapter.audit.balp`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import insert
from sqlmodel import Session

from adapter.audit.tables import AuditEvent, AuditPending
from adapter.storage.db import table_of, utcnow


class Kind(StrEnum):
    """What was done. Each kind has one BALP/DICOM mapping in :mod:`adapter.audit.balp`."""

    DISCLOSURE = "disclosure"  # a message sent to WhatsApp (BALP PrivacyDisclosure)
    STATUS = "status"  # a delivery status Meta reported
    INBOUND = "inbound"  # a message the patient sent
    PATIENT_READ = "patient-read"  # a FHIR read of a patient's resource (BALP PatientRead)
    PATIENT_QUERY = "patient-query"  # a FHIR search about a patient (BALP PatientQuery)
    PATIENT_CREATE = "patient-create"  # a FHIR create for a patient, e.g. a Task (BALP PatientCreate)
    PATIENT_UPDATE = "patient-update"  # a FHIR write-back, e.g. an Appointment confirmed (BALP PatientUpdate)
    LINK_ACCESS = "link-access"  # a request to a portal link (preview, open, refused)
    HANDOFF = "handoff"  # a conversation handed to staff, or handed back
    LOGIN = "login"  # a person or system authenticating to the API (DICOM 110114)
    SECURITY_ALERT = "security-alert"  # a forged, expired or replayed credential/token/signature (DICOM 110113)
    ADMIN = "admin"  # a configuration or operator action
    AUDIT_ACCESS = "audit-access"  # an auditor's query or export (audited too)
    RESOLVE = "resolve"  # a privacy officer resolving a patient reference to a person
    RETENTION = "retention"  # a retention purge
    KEY_ROTATION = "key-rotation"  # a data or index key rotated


class Outcome(StrEnum):
    """FHIR AuditEvent.outcome (http://hl7.org/fhir/R4/valueset-audit-event-outcome.html)."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class Action(StrEnum):
    """FHIR AuditEvent.action (http://hl7.org/fhir/R4/valueset-audit-event-action.html)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditDetailError(ValueError):
    """An audit entry's detail would have carried something that must not be stored (PHI, secrets)."""


DetailValue = str | int | float | bool | None
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
_MAX_DETAIL_TEXT = 120


@dataclass(frozen=True)
class AuditEntry:
    """One thing to audit. ``agent`` names who acted (``system``, ``patient``, ``ehr``, ``meta``,
    ``user:<credential name>``, ``cli:<os user>``); ``source`` is the network address for HTTP requests."""

    kind: Kind
    action: Action
    outcome: Outcome = Outcome.SUCCESS
    agent: str = "system"
    agent_role: str | None = None
    source: str | None = None
    patient_ref: str | None = None
    entity_ref: str | None = None
    purpose: str | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)


def _is_iso_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _checked_detail(detail: Mapping[str, DetailValue]) -> str | None:
    if not detail:
        return None
    for key, value in detail.items():
        if not isinstance(value, str):
            continue
        # An ISO 8601 date or instant has a phone number's digit run but is not one.
        if len(value) > _MAX_DETAIL_TEXT or (_PHONE_LIKE.search(value) and not _is_iso_time(value)):
            raise AuditDetailError(f"audit detail {key!r} looks like free text or a phone number; store a code")
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def as_row(entry: AuditEntry, at: datetime) -> dict[str, object]:
    """The ``audit_event`` row of an entry (exposed for bulk paths and tests)."""
    return {"recorded_at": at, "kind": entry.kind.value, "action": entry.action.value,
            "outcome": entry.outcome.value, "agent": entry.agent[:200], "agent_role": entry.agent_role,
            "source": entry.source[:64] if entry.source else None, "patient_ref": entry.patient_ref,
            "entity_ref": entry.entity_ref, "purpose": entry.purpose, "detail": _checked_detail(entry.detail)}


def record(session: Session, *entries: AuditEntry, at: datetime | None = None) -> list[int]:
    """Adds ``entries`` to the session's transaction and queues them for chaining; returns their ids.

    Call it inside the transaction of the action being audited: if that action rolls back, so does
    its audit entry, and if the entry cannot be written, the action fails with it.
    """
    if not entries:
        return []
    when = at or utcnow()
    rows = [as_row(entry, when) for entry in entries]
    events = table_of(AuditEvent)
    if session.get_bind().dialect.name == "sqlite":
        # One multi-row INSERT: asking SQLAlchemy for the ids in parameter order makes it send SQLite
        # one INSERT per entry. SQLite gives the rows of one INSERT increasing rowids in VALUES order
        # (and the writer lock admits no other writer), so the ids sorted are the entries' ids in order.
        ids = sorted(row[0] for row in session.execute(insert(events).returning(events.c.id), rows).all())
    else:
        statement = insert(events).returning(events.c.id, sort_by_parameter_order=True)
        ids = [row[0] for row in session.execute(statement, rows).all()]
    session.execute(insert(table_of(AuditPending)), [{"event_id": event_id} for event_id in ids])
    return ids
