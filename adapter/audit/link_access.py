"""The service's side of the portal links' ports: link requests and revocations in the audit trail.

Each link request gets one ``link-access`` entry (GET/HEAD are reads, POST executes the link) and,
for a forged, malformed or expired token, a ``security-alert`` (DICOM 110113 Security Alert, IHE
BALP); each revocation gets one ``admin`` entry with the scope and count. All are recorded in the
caller's transaction (:func:`adapter.audit.trail.record`), which :data:`LINK_PORTS` opens with the
service's :func:`adapter.storage.db.transaction` (its SQLite writer turns included). References
only: no entry carries the token or its hash.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.storage.db import transaction
from portal_links.ports import LinkPorts

# FHIR AuditEvent.outcome of each link outcome: refusals of a real link are minor (4), tokens that
# name no link (forged, or signed by a leaked key) and probes cut off by the guard are serious (8).
_ACCESS_OUTCOME = {"opened": Outcome.SUCCESS, "preview": Outcome.SUCCESS, "expired": Outcome.MINOR_FAILURE,
                   "revoked": Outcome.MINOR_FAILURE, "exhausted": Outcome.MINOR_FAILURE,
                   "unknown": Outcome.SERIOUS_FAILURE, "malformed": Outcome.SERIOUS_FAILURE,
                   "rate_limited": Outcome.SERIOUS_FAILURE}
# Outcomes that are also a security alert, with their AuditEvent.outcome and the reason recorded.
_ALERTS = {"expired": (Outcome.MINOR_FAILURE, "expired_token"),
           "malformed": (Outcome.SERIOUS_FAILURE, "forged_token"),
           "unknown": (Outcome.SERIOUS_FAILURE, "forged_token")}
LINK_AGENT = "link-holder"  # whoever holds the link: unauthenticated (the portal asks for a login)


def access_entries(*, link_id: int | None, patient_ref: str | None, outcome: str, client: str | None,
                   ua_class: str, method: str) -> list[AuditEntry]:
    """The audit entries of one link request: ``link-access``, plus a ``security-alert`` for a
    forged, malformed or expired token."""
    method = method.upper()[:8]
    entity = f"link/{link_id}" if link_id is not None else None
    source = (client or None) and client[:64]
    entries = [AuditEntry(kind=Kind.LINK_ACCESS, action=Action.EXECUTE if method == "POST" else Action.READ,
                          outcome=_ACCESS_OUTCOME.get(outcome, Outcome.SERIOUS_FAILURE), agent=LINK_AGENT,
                          source=source, patient_ref=patient_ref, entity_ref=entity,
                          detail={"outcome": outcome, "method": method, "ua_class": ua_class})]
    if outcome in _ALERTS:
        alert_outcome, reason = _ALERTS[outcome]
        entries.append(AuditEntry(kind=Kind.SECURITY_ALERT, action=Action.EXECUTE, outcome=alert_outcome,
                                  agent=LINK_AGENT, source=source, patient_ref=patient_ref, entity_ref=entity,
                                  detail={"reason": reason, "outcome": outcome, "method": method,
                                          "ua_class": ua_class}))
    return entries


def revocation_entry(*, agent: str, scope: str, revoked: int, entity_ref: str | None, patient_ref: str | None,
                     window: tuple[datetime, datetime] | None) -> AuditEntry:
    """The ``admin`` entry of one revocation (``links.revoke``)."""
    return AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=agent, patient_ref=patient_ref,
                      entity_ref=entity_ref, detail={"command": "links.revoke", "scope": scope, "revoked": revoked,
                                                     **_epochs(window)})


def _epochs(window: tuple[datetime, datetime] | None) -> dict[str, int]:
    # Epoch seconds, not ISO text: the trail's guard reads long digit runs in strings as phone numbers.
    return {"from_epoch": int(window[0].timestamp()), "to_epoch": int(window[1].timestamp())} if window else {}


class LinkAccessAudit:
    """:class:`portal_links.ports.LinkAudit` writing to the service's audit trail."""

    def link_request(self, session: Session, *, link_id: int | None, patient_ref: str | None, outcome: str,
                     client: str | None, ua_class: str, method: str, at: datetime) -> None:
        record(session, *access_entries(link_id=link_id, patient_ref=patient_ref, outcome=outcome, client=client,
                                        ua_class=ua_class, method=method), at=at)

    def revocation(self, session: Session, *, agent: str, scope: str, revoked: int, at: datetime,
                   entity_ref: str | None, patient_ref: str | None,
                   window: tuple[datetime, datetime] | None) -> None:
        record(session, revocation_entry(agent=agent, scope=scope, revoked=revoked, entity_ref=entity_ref,
                                         patient_ref=patient_ref, window=window), at=at)


# What the composition root hands to portal links: the service's write transaction and audit trail.
LINK_PORTS = LinkPorts(transaction=transaction, audit=LinkAccessAudit())
