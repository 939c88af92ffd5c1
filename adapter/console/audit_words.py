"""One audit record in plain words for the auditor pages ("the bridge sent a WhatsApp message
(template appointment_confirmation) to Patient/123 at 2026-12-03 08:15:02 UTC"), beside its BALP
AuditEvent (:mod:`adapter.audit.balp`). Built only from what the record holds — references, codes and
counts (:mod:`adapter.audit.trail`) — so the words carry no more than the record does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from adapter.audit.tables import AuditEvent

_AGENTS = {"system": "the bridge", "patient": "the patient", "ehr": "the EHR", "meta": "Meta (WhatsApp)",
           "link-holder": "whoever held the link", "unknown": "an unidentified client"}
_OUTCOMES = {"0": "succeeded", "4": "failed (minor failure)", "8": "failed (serious failure)",
             "12": "failed (major failure)"}
_ACTIONS = {"C": "created", "R": "read", "U": "updated", "D": "deleted", "E": "executed"}
_LINK_VERBS = {"opened": "opened", "preview": "previewed (a link preview, nothing redeemed)",
               "expired": "tried an expired", "revoked": "tried a revoked", "exhausted": "tried a used-up",
               "unknown": "tried an unknown (forged) token for a", "malformed": "tried a malformed token for a",
               "rate_limited": "was cut off (too many tries) opening a"}
_FHIR_VERBS = {"patient-read": "read", "patient-query": "searched", "patient-create": "created",
               "patient-update": "updated"}


def agent_words(agent: str) -> str:
    if agent.startswith("user:"):
        return f"user {agent[5:]}"
    if agent.startswith("cli:"):
        return f"{agent[4:]} (command line)"
    return _AGENTS.get(agent, agent)


def when_words(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def detail_of(event: AuditEvent) -> dict[str, Any]:
    try:
        found = json.loads(event.detail) if event.detail else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _whose(event: AuditEvent) -> str:
    return f" of {event.patient_ref}" if event.patient_ref else ""


def _what(event: AuditEvent, detail: dict[str, Any]) -> str:
    who, kind = agent_words(event.agent), event.kind
    if detail.get("op") == "page-view":
        return f"{who} viewed the console page {detail.get('path', '?')}"
    entity = event.entity_ref or "a record"
    patient = event.patient_ref or "a patient"
    if kind == "disclosure":
        what = f"a WhatsApp template {detail['template']}" if detail.get("template") else "a WhatsApp message"
        result = f" (result: {detail['result']})" if detail.get("result") else ""
        return f"{who} sent {what} to {patient}{result}"
    if kind == "status":
        return f"{who} reported message {entity}{_whose(event)} as {detail.get('status', 'changed')}"
    if kind == "inbound":
        return f"{patient if event.patient_ref else 'a WhatsApp user'} sent a message ({detail.get('type', '?')})"
    if kind in _FHIR_VERBS:
        return f"{who} {_FHIR_VERBS[kind]} {entity} in the EHR{_whose(event)}"
    if kind == "link-access":
        verb = _LINK_VERBS.get(str(detail.get("outcome")), "requested")
        return f"{who} {verb} link {entity}{_whose(event)}"
    if kind == "handoff":
        return f"{who} {'handed back' if detail.get('event') == 'end' else 'handed to staff'} the conversation " \
               f"with {patient}"
    if kind == "login":
        op = "logged out" if detail.get("op") == "logout" else "logged in"
        return f"{who} {op}" if event.outcome == "0" else f"{who} failed to log in ({detail.get('reason', '?')})"
    if kind == "security-alert":
        where = f" on {detail['path']}" if detail.get("path") else ""
        return f"security alert: {detail.get('reason', 'refused')}{where}, by {who}"
    if kind == "audit-access":
        op = {"search": "searched", "export": "exported", "verify": "verified", "link-access":
              "looked up link opens in", "read": "viewed one record of"}.get(str(detail.get("op")), "read")
        return f"{who} {op} the audit trail"
    if kind == "resolve":
        return f"{who} resolved {patient} to a person"
    if kind == "admin":
        op = detail.get("op") or detail.get("command") or "an operation"
        target = f" on {event.entity_ref}" if event.entity_ref else ""
        return f"{who} performed {op}{target}"
    if kind == "retention":
        return f"{who} purged records past their retention"
    if kind == "key-rotation":
        return f"{who} rotated a key"
    return f"{who} {_ACTIONS.get(event.action, 'did')} {entity}"


def describe(event: AuditEvent) -> str:
    """One sentence: who did what to which reference, when, from where, with what outcome."""
    detail = detail_of(event)
    sentence = _what(event, detail)
    sentence = sentence[0].upper() + sentence[1:]
    parts = [f"{sentence} at {when_words(event.recorded_at)}"]
    if event.source:
        parts.append(f"from {event.source}")
    if event.agent_role:
        parts.append(f"as {event.agent_role}")
    text = " ".join(parts)
    if event.outcome != "0":
        text += f"; it {_OUTCOMES.get(event.outcome, 'failed')}"
    if event.purpose:
        text += f"; stated reason: {event.purpose}"
    return text + "."
