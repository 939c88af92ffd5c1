"""Link rows: mint a token and persist its hash; redeem one atomically.

The token itself is returned once, to be put in the message, and never stored or logged.
Targets are names ("report"), mapped to portal paths by :data:`PORTAL_PATHS`; the URL a patient
is sent to never carries a resource id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from adapter.db import RowSink, transaction, utcnow
from adapter.models import LinkToken

from .tokens import LinkSigner, TokenRefused, token_hash

PORTAL_PATHS = {"report": "/results", "appointment": "/appointments"}
DEFAULT_MAX_OPENS = 5


class LinkOutcome(Enum):
    OPENED = "opened"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXHAUSTED = "exhausted"
    UNKNOWN = "unknown"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Redemption:
    outcome: LinkOutcome
    target: str | None = None


class LinkStore:
    def __init__(self, signer: LinkSigner, ttl: timedelta) -> None:
        self.signer = signer
        self.ttl = ttl

    def mint(self, session: RowSink, *, purpose: str, target: str, patient_ref: str, resource_ref: str,
             max_opens: int = DEFAULT_MAX_OPENS, now: datetime | None = None) -> str:
        """Creates a link in the caller's transaction and returns the token (to send, never to keep)."""
        if target not in PORTAL_PATHS:
            raise ValueError(f"unknown link target {target!r}; known: {sorted(PORTAL_PATHS)}")
        created = now or utcnow()
        expires = created + self.ttl
        token = self.signer.mint(expires)
        session.add(LinkToken(token_hash=token_hash(token), purpose=purpose, target=target,
                              patient_ref=patient_ref, resource_ref=resource_ref, created_at=created,
                              expires_at=expires, max_opens=max_opens))
        return token

    def redeem(self, engine: Engine, token: str) -> Redemption:
        """Counts one open if the link is live — one atomic UPDATE — and says where it leads."""
        try:
            self.signer.verify(token)
        except TokenRefused as refused:
            return Redemption(LinkOutcome(refused.problem.value))
        digest, now = token_hash(token), utcnow()
        with transaction(engine) as session:
            counted = session.execute(
                update(LinkToken)
                .where(col(LinkToken.token_hash) == digest, col(LinkToken.revoked_at).is_(None),
                       col(LinkToken.expires_at) > now, col(LinkToken.opens) < col(LinkToken.max_opens))
                .values(opens=col(LinkToken.opens) + 1)
                .returning(col(LinkToken.target))
            ).first()
            if counted is not None:
                return Redemption(LinkOutcome.OPENED, counted[0])
            row = session.exec(select(LinkToken).where(col(LinkToken.token_hash) == digest)).first()
        if row is None:
            return Redemption(LinkOutcome.UNKNOWN)
        if row.revoked_at is not None:
            return Redemption(LinkOutcome.REVOKED)
        if row.expires_at <= now:
            return Redemption(LinkOutcome.EXPIRED)
        return Redemption(LinkOutcome.EXHAUSTED)

