"""The access log of portal links: one :class:`portal_links.tables.LinkRequest` row per request.

A row says which link (its id, NULL when the token named none), what happened, from which client
address, with which method and when, and a coarse user-agent class. It never holds the token or
its hash. The user-agent class is a label for people reading the log: no decision depends on it
(a preview fetch is recognised by its method, never by who claims to make it).

Each row is mirrored in the audit trail in the same transaction, through the host's
:class:`portal_links.ports.LinkAudit`; the row's values are all it is given, so no audit entry can
carry the token or its hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from portal_links.ports import LinkAudit
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


def insert_request(session: Any, audit: LinkAudit, *, patient_ref: str | None = None, **values: Any) -> None:
    """Adds one row and audits it in the caller's transaction (a Session).
    ``link_id`` must be a plain id here (or None); ``patient_ref`` is the link row's."""
    row = request_row(**values)
    session.execute(LinkRequest.__table__.insert().values(**row))  # type: ignore[attr-defined]
    audit.link_request(session, patient_ref=patient_ref, **row)
