"""Link rows: mint a token and persist its hash; redeem one atomically; record every request.

The token itself is returned once, to be put in the message, and never stored or logged.
Targets are names ("report"), mapped to portal paths by :data:`PORTAL_PATHS`; the URL a patient
is sent to never carries a resource id.

Every request is recorded in ``link_request`` (:mod:`portal_links.requests`) and audited, in a
write transaction, through the host's :class:`portal_links.ports.LinkPorts`, cheaply: a POST's rows
are inserted in the same transaction as its redeem, a GET/HEAD costs one indexed lookup of the link
(its id and patient reference, for the audit entry) and the inserts, and a token refused by its
signature or its signed expiry costs the inserts and no lookup of ``link_token``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from portal_links.clock import utcnow
from portal_links.ports import LinkPorts, RowSink
from portal_links.tables import LinkToken

from .requests import insert_request
from .tokens import LinkSigner, TokenProblem, TokenRefused, token_hash

PORTAL_PATHS = {"report": "/results", "appointment": "/appointments", "document": "/documents",
                "statement": "/billing"}
DEFAULT_MAX_OPENS = 5
# How far another instance's clock may be ahead of ours when it mints a link.
CLOCK_SKEW = timedelta(minutes=5)


class LinkOutcome(Enum):
    OPENED = "opened"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXHAUSTED = "exhausted"
    UNKNOWN = "unknown"
    MALFORMED = "malformed"
    PREVIEW = "preview"  # a GET/HEAD of a well-signed token: shown the page, nothing counted
    RATE_LIMITED = "rate_limited"  # refused by the probe guard before the token was looked at


@dataclass(frozen=True)
class Redemption:
    outcome: LinkOutcome
    target: str | None = None
    link_id: int | None = None
    patient_ref: str | None = None  # for the optional hand-off assertion (never shown, never logged)


class LinkStore:
    def __init__(self, signer: LinkSigner, ttl: timedelta, ports: LinkPorts) -> None:
        self.signer = signer
        self.ttl = ttl
        self.ports = ports

    def mint(self, session: RowSink, *, purpose: str, target: str, patient_ref: str, resource_ref: str,
             max_opens: int = DEFAULT_MAX_OPENS, now: datetime | None = None,
             message_key: str | None = None) -> str:
        """Creates a link in the caller's transaction and returns the token (to send, never to keep).

        ``max_opens=1`` makes the link strictly single-use, also under concurrent POSTs (the
        redeem is one conditional UPDATE). ``message_key`` is the outbox natural key of the
        message the link goes out in, so that all links of a message can be revoked together."""
        if target not in PORTAL_PATHS:
            raise ValueError(f"unknown link target {target!r}; known: {sorted(PORTAL_PATHS)}")
        if max_opens < 1:
            raise ValueError("max_opens must be at least 1")
        created = now or utcnow()
        expires = created + self.ttl
        token = self.signer.mint(expires)
        session.add(LinkToken(token_hash=token_hash(token), purpose=purpose, target=target,
                              patient_ref=patient_ref, resource_ref=resource_ref, created_at=created,
                              expires_at=expires, max_opens=max_opens, message_key=message_key))
        return token

    def redeem(self, engine: Engine, token: str, *, client: str | None = None, user_agent: str | None = None,
               method: str = "POST", now: datetime | None = None) -> Redemption:
        """Counts one open if the link is live — one atomic UPDATE — and says where it leads.

        The request is recorded in the same transaction. A token refused by its signature or its
        signed expiry is recorded without any lookup of ``link_token``."""
        now = now or utcnow()
        log: dict[str, Any] = {"client": client, "user_agent": user_agent, "method": method, "at": now}
        try:
            self._verify(token, now)
        except TokenRefused as refused:
            # Forged, altered or past its signed expiry: refused with no lookup of ``link_token`` (the
            # request is still recorded, naming no link): a dumped or old token costs one INSERT.
            outcome = LinkOutcome(refused.problem.value)
            with self.ports.transaction(engine) as session:
                insert_request(session, self.ports.audit, link_id=None, outcome=outcome.value, **log)
            return Redemption(outcome)
        digest = token_hash(token)
        with self.ports.transaction(engine) as session:
            counted = session.execute(
                update(LinkToken)
                .where(col(LinkToken.token_hash) == digest, col(LinkToken.revoked_at).is_(None),
                       col(LinkToken.expires_at) > now, col(LinkToken.opens) < col(LinkToken.max_opens))
                .values(opens=col(LinkToken.opens) + 1)
                .returning(col(LinkToken.id), col(LinkToken.target), col(LinkToken.patient_ref))
            ).first()
            if counted is not None:
                insert_request(session, self.ports.audit, link_id=counted[0], outcome=LinkOutcome.OPENED.value,
                               patient_ref=counted[2], **log)
                return Redemption(LinkOutcome.OPENED, counted[1], counted[0], counted[2])
            row = session.exec(
                select(col(LinkToken.id), col(LinkToken.revoked_at), col(LinkToken.expires_at),
                       col(LinkToken.patient_ref))
                .where(col(LinkToken.token_hash) == digest)
            ).first()
            if row is None:
                result = Redemption(LinkOutcome.UNKNOWN)
            elif row[1] is not None:
                result = Redemption(LinkOutcome.REVOKED, link_id=row[0])
            elif row[2] <= now:
                result = Redemption(LinkOutcome.EXPIRED, link_id=row[0])
            else:
                result = Redemption(LinkOutcome.EXHAUSTED, link_id=row[0])
            insert_request(session, self.ports.audit, link_id=result.link_id, outcome=result.outcome.value,
                           patient_ref=row[3] if row is not None else None, **log)
        return result

    def preview(self, engine: Engine, token: str, *, client: str | None = None, user_agent: str | None = None,
                method: str = "GET", now: datetime | None = None) -> LinkOutcome:
        """Records a GET/HEAD — one INSERT — and counts nothing, whoever asks (WhatsApp's and
        Facebook's preview fetchers, headless browsers, mail scanners, the patient).

        Returns ``PREVIEW`` for a well-signed live token (whatever its row says: the page is the
        same), ``MALFORMED`` or ``EXPIRED`` when its signature refuses it (no lookup then)."""
        now = now or utcnow()
        try:
            self._verify(token, now)
            outcome = LinkOutcome.PREVIEW
        except TokenRefused as refused:
            outcome = LinkOutcome(refused.problem.value)
        with self.ports.transaction(engine) as session:
            found = None
            if outcome is LinkOutcome.PREVIEW:  # the audit entry names the link and its patient
                found = session.exec(select(col(LinkToken.id), col(LinkToken.patient_ref))
                                     .where(col(LinkToken.token_hash) == token_hash(token))).first()
            insert_request(session, self.ports.audit, link_id=found[0] if found else None, outcome=outcome.value,
                           client=client, user_agent=user_agent, method=method, at=now,
                           patient_ref=found[1] if found else None)
        return outcome

    def _verify(self, token: str, now: datetime) -> None:
        """The signature and the signed validity window, with no lookup: refused when expired, or when
        it claims a longer life than a link minted now can have (a clock far ahead, or a lifetime
        longer than the configured one): not yet valid, refused as expired."""
        verified = self.signer.verify(token, now)
        if verified.expires_at > now + self.ttl + CLOCK_SKEW:
            raise TokenRefused(TokenProblem.EXPIRED)

    def record_rate_limited(self, engine: Engine, *, client: str | None, user_agent: str | None, method: str,
                            now: datetime | None = None) -> None:
        """Records a request the probe guard refused; its token is not looked at."""
        with self.ports.transaction(engine) as session:
            insert_request(session, self.ports.audit, link_id=None, outcome=LinkOutcome.RATE_LIMITED.value,
                           client=client, user_agent=user_agent, method=method, at=now or utcnow())
