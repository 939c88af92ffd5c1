"""Quick-reply payloads: opaque random tokens that resolve server-side to patient, resource,
the resource's version when the message was sent, and the action.

22 URL-safe characters (128 random bits) — far under Meta's 256-character payload limit — and
no PHI. Only the SHA-256 of a token is stored, so a database leak cannot forge a tap.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import insert
from sqlmodel import Session, col, select

from adapter.outbox.tables import ActionToken
from adapter.storage.db import RowSink, table_of, utcnow
from portal_links.tokens import token_hash

# Buttons of notifications, and of the service's own follow-up questions (cancel: are you sure?;
# reschedule: which slot?).
ACTIONS = frozenset({"confirm", "reschedule", "cancel", "talk_to_staff", "stop", "cancel_confirmed", "keep",
                     "pick_slot"})
DEFAULT_TTL = timedelta(days=60)


def mint_action_token(session: RowSink, *, action: str, patient_ref: str, resource_ref: str,
                      version_id: str | None, ttl: timedelta = DEFAULT_TTL, now: datetime | None = None,
                      detail: str | None = None) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {sorted(ACTIONS)}")
    created = now or utcnow()
    token = secrets.token_urlsafe(16)
    session.add(ActionToken(token_hash=token_hash(token), action=action, patient_ref=patient_ref,
                            resource_ref=resource_ref, version_id=version_id, detail=detail, created_at=created,
                            expires_at=created + ttl))
    return token


def insert_tokens(session: Session, tokens: Sequence[ActionToken]) -> None:
    """Writes minted token rows in one multi-row INSERT: a message's buttons are minted together
    and go into the database only once the message is queued (:mod:`adapter.scheduling.decide`)."""
    if tokens:
        session.execute(insert(table_of(ActionToken)), [token.model_dump(exclude={"id"}) for token in tokens])


def resolve_action_token(session: Session, token: str) -> ActionToken | None:
    """The token's row, or None for an unknown token (forged, or from another deployment)."""
    if len(token) > 256 or not token.isascii():
        return None
    return session.exec(select(ActionToken).where(col(ActionToken.token_hash) == token_hash(token))).first()
