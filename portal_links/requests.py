"""The access log of portal links: one :class:`portal_links.tables.LinkRequest` row per request.

A row says which link (its id, NULL when the token named none), what happened, from which client
address, with which method and when, and a coarse user-agent class. It never holds the token or
its hash. The user-agent class is a label for people reading the log: no decision depends on it
(a preview fetch is recognised by its method, never by who claims to make it).

Each row is mirrored in the audit trail in the same transaction (:func:`access_entries`): one
``link-access`` entry per request and, for a forged, malformed or expired token, a ``security-alert``
(DICOM 110113 Security Alert, IHE BALP). Neither carries the token or its hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.storage.db import table_of
from portal_links.tables import LinkRequest

UA_CLASSES = ("whatsapp", "facebook", "headless", "browser", "bot", "other")
_BOT_MARKS = ("bot", "crawl", "spider", "slurp", "preview", "curl/", "wget/", "python-", "httpx/", "aiohttp/",
              "go-http-client", "okhttp", "java/", "libwww", "scanner", "fetch")


def classify_user_agent(user_agent: str | None) -> str:
    """``whatsapp``, ``facebook``, ``headless``, ``browser``, ``bot`` or ``other``: a label only."""
    ua = (user_agent or "").lower()
    if not ua:
        return "other"
    if "whatsapp" in ua:
        return "whatsapp"
    if "facebookexternalhit" in ua or "facebot" in ua or "facebookcatalog" in ua:
        return "facebook"
    if "headless" in ua or "phantomjs" in ua:
        return "headless"
    if any(mark in ua for mark in _BOT_MARKS):
        return "bot"
    if ua.startswith("mozilla/"):
        return "browser"
    return "other"


def request_row(*, link_id: Any, outcome: str, client: str | None, user_agent: str | None, method: str,
                at: datetime) -> dict[str, Any]:
    """The values of one row; ``link_id`` may be a scalar subquery (GET: one INSERT, no SELECT)."""
    return {"link_id": link_id, "outcome": outcome, "client": (client or None) and client[:64],
            "ua_class": classify_user_agent(user_agent), "method": method.upper()[:8], "at": at}


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
                   user_agent: str | None, method: str) -> list[AuditEntry]:
    """The audit entries of one link request: ``link-access`` (GET/HEAD are reads, POST executes the
    link), plus a ``security-alert`` for a forged, malformed or expired token. References only."""
    method = method.upper()[:8]
    entity = f"link/{link_id}" if link_id is not None else None
    source = (client or None) and client[:64]
    ua_class = classify_user_agent(user_agent)
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


def insert_request(session: Any, *, patient_ref: str | None = None, **values: Any) -> None:
    """Adds one row and its audit entries in the caller's transaction (a Session).
    ``link_id`` must be a plain id here (or None); ``patient_ref`` is the link row's."""
    row = request_row(**values)
    session.execute(table_of(LinkRequest).insert().values(**row))
    record(session, *access_entries(link_id=row["link_id"], patient_ref=patient_ref, outcome=row["outcome"],
                                    client=row["client"], user_agent=values.get("user_agent"), method=row["method"]),
           at=row["at"])
