"""Revoking portal links: one link, all links of a message, of a patient, or minted in a window.

Each function is one UPDATE setting ``revoked_at`` on the live (not yet revoked) links it names
and returns how many it revoked. It is effective at once: the next POST to such a link finds
``revoked_at`` set and gets the neutral "request a fresh link" page, recorded as ``revoked``.
Already revoked links keep their first ``revoked_at``. Revocation is not undone; mint a new link.

Every revocation is audited (``admin``, in the UPDATE's transaction) with ``agent`` naming who
revoked (``cli:<user>`` for the operator command) and the scope and count in its detail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.storage.db import transaction, utcnow
from portal_links.tables import LinkToken


def _revoke(engine: Engine, condition: Any, now: datetime | None, agent: str, scope: str, *,
            entity_ref: str | None = None, patient_ref: str | None = None,
            window: tuple[datetime, datetime] | None = None) -> int:
    at = now or utcnow()
    statement = update(LinkToken).where(condition, col(LinkToken.revoked_at).is_(None)).values(revoked_at=at)
    with transaction(engine) as session:
        count = int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
        record(session, AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=agent, patient_ref=patient_ref,
                                   entity_ref=entity_ref, detail={"command": "links.revoke", "scope": scope,
                                                                  "revoked": count, **_epochs(window)}), at=at)
        return count


def revoke_link(engine: Engine, link_id: int, *, now: datetime | None = None, agent: str = "system") -> int:
    """Revokes the link with this id (``link_request.link_id`` names it); returns 0 or 1."""
    return _revoke(engine, col(LinkToken.id) == link_id, now, agent, "link", entity_ref=f"link/{link_id}")


def revoke_message(engine: Engine, message_key: str, *, now: datetime | None = None, agent: str = "system") -> int:
    """Revokes every link minted for the message with this outbox natural key."""
    return _revoke(engine, col(LinkToken.message_key) == message_key, now, agent, "message",
                   entity_ref=f"outbox-key/{message_key}"[:300])


def revoke_patient(engine: Engine, patient_ref: str, *, now: datetime | None = None, agent: str = "system") -> int:
    """Revokes every link of a patient (``Patient/123``), e.g. after a lost phone."""
    return _revoke(engine, col(LinkToken.patient_ref) == patient_ref, now, agent, "patient", patient_ref=patient_ref)


def revoke_created_between(engine: Engine, start: datetime, end: datetime, *, now: datetime | None = None,
                           agent: str = "system") -> int:
    """Revokes every link minted in ``[start, end)``, e.g. while a signing key may have leaked."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("end must be after start")
    return _revoke(engine, (col(LinkToken.created_at) >= start) & (col(LinkToken.created_at) < end), now, agent,
                   "window", window=(start, end))


def _epochs(window: tuple[datetime, datetime] | None) -> dict[str, int]:
    # Epoch seconds, not ISO text: the trail's guard reads long digit runs in strings as phone numbers.
    return {"from_epoch": int(window[0].timestamp()), "to_epoch": int(window[1].timestamp())} if window else {}
