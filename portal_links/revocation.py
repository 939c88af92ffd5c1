"""Revoking portal links: one link, all links of a message, of a patient, or minted in a window.

Each function is one UPDATE setting ``revoked_at`` on the live (not yet revoked) links it names
and returns how many it revoked. It is effective at once: the next POST to such a link finds
``revoked_at`` set and gets the neutral "request a fresh link" page, recorded as ``revoked``.
Already revoked links keep their first ``revoked_at``. Revocation is not undone; mint a new link.

Every revocation is audited through the host's :class:`portal_links.ports.LinkAudit`, in the
UPDATE's transaction, with ``agent`` naming who revoked (``cli:<user>`` for the operator command),
the scope and the count.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from portal_links.clock import utcnow
from portal_links.ports import LinkPorts
from portal_links.tables import LinkToken


def _revoke(engine: Engine, ports: LinkPorts, condition: Any, now: datetime | None, agent: str, scope: str, *,
            entity_ref: str | None = None, patient_ref: str | None = None,
            window: tuple[datetime, datetime] | None = None) -> int:
    at = now or utcnow()
    statement = update(LinkToken).where(condition, col(LinkToken.revoked_at).is_(None)).values(revoked_at=at)
    with ports.transaction(engine) as session:
        count = int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
        ports.audit.revocation(session, agent=agent, scope=scope, revoked=count, at=at, entity_ref=entity_ref,
                               patient_ref=patient_ref, window=window)
        return count


def revoke_link(engine: Engine, link_id: int, *, ports: LinkPorts, now: datetime | None = None,
                agent: str = "system") -> int:
    """Revokes the link with this id (``link_request.link_id`` names it); returns 0 or 1."""
    return _revoke(engine, ports, col(LinkToken.id) == link_id, now, agent, "link", entity_ref=f"link/{link_id}")


def revoke_message(engine: Engine, message_key: str, *, ports: LinkPorts, now: datetime | None = None,
                   agent: str = "system") -> int:
    """Revokes every link minted for the message with this outbox natural key."""
    return _revoke(engine, ports, col(LinkToken.message_key) == message_key, now, agent, "message",
                   entity_ref=f"outbox-key/{message_key}"[:300])


def revoke_patient(engine: Engine, patient_ref: str, *, ports: LinkPorts, now: datetime | None = None,
                   agent: str = "system") -> int:
    """Revokes every link of a patient (``Patient/123``), e.g. after a lost phone."""
    return _revoke(engine, ports, col(LinkToken.patient_ref) == patient_ref, now, agent, "patient",
                   patient_ref=patient_ref)


def revoke_created_between(engine: Engine, start: datetime, end: datetime, *, ports: LinkPorts,
                           now: datetime | None = None, agent: str = "system") -> int:
    """Revokes every link minted in ``[start, end)``, e.g. while a signing key may have leaked."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("end must be after start")
    return _revoke(engine, ports, (col(LinkToken.created_at) >= start) & (col(LinkToken.created_at) < end), now, agent,
                   "window", window=(start, end))

