"""API keys and sessions (45 CFR 164.312(a)(2)(i) unique user identification, 164.312(d) person or
entity authentication).

A credential is a random 256-bit URL-safe key shown once; a login exchanges it for a session token
that lasts ``api_session_minutes``. The database keeps only SHA-256 of either. A fast unsalted hash
is right here, unlike for passwords: a password hash must be slow and salted because passwords are
guessable, but a uniformly random 256-bit secret cannot be guessed or found in a table, so SHA-256
is already preimage-resistant beyond any brute force, and a fast hash lets every request be checked
by an indexed equality lookup. Every login and logout is audited; failed logins are throttled per
client address and audited in bounded form (:mod:`adapter.security.login_throttle`): the first in
full, then one summary entry per throttle window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.security.login_throttle import FailureVerdict, LoginThrottle, Summary
from adapter.security.roles import Principal, Role
from adapter.security.tables import ApiCredential, ApiSession
from adapter.storage.db import transaction, utcnow


class CredentialError(Exception):
    """A credential cannot be created or revoked (duplicate name, unknown name, bad role)."""


class AuthenticationError(Exception):
    """A key or session token is missing, unknown, revoked, expired or ended. ``reason`` is a code
    (``unknown``, ``revoked``, ``expired``, ``ended``) for the audit trail; never the secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason = reason


class LoginThrottled(AuthenticationError):
    """Too many failed logins from this address: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


@dataclass(frozen=True)
class LoginResult:
    token: str
    role: Role
    expires_at: datetime


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def create_credential(engine: Engine, name: str, role: Role | str, actor: str, source: str | None = None) -> str:
    """Creates a credential and returns its key: the only time it is ever visible."""
    try:
        role = Role(role)
    except ValueError as exc:
        raise CredentialError(f"unknown role {str(role)[:32]!r}; roles: {', '.join(r.value for r in Role)}") from exc
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise CredentialError("a credential name is 1 to 100 printable characters")
    secret = secrets.token_urlsafe(32)
    with transaction(engine) as session:
        if session.exec(select(ApiCredential).where(col(ApiCredential.name) == name)).first() is not None:
            raise CredentialError(f"a credential named {name!r} exists already")
        session.add(ApiCredential(name=name, role=role.value, secret_hash=digest(secret), created_at=utcnow()))
        record(session, AuditEntry(Kind.ADMIN, Action.CREATE, agent=actor, source=source,
                                   entity_ref=f"credential/{name}"[:300], detail={"op": "credential-create",
                                                                                  "role": role.value}))
    return secret


def revoke_credential(engine: Engine, name: str, actor: str, source: str | None = None) -> None:
    """Revokes a credential and ends its open sessions at once."""
    with transaction(engine) as session:
        credential = session.exec(select(ApiCredential).where(col(ApiCredential.name) == name)).first()
        if credential is None or credential.revoked_at is not None:
            raise CredentialError(f"no active credential named {name[:100]!r}")
        now = utcnow()
        credential.revoked_at = now
        session.add(credential)
        for open_session in session.exec(select(ApiSession).where(
                col(ApiSession.credential_id) == credential.id, col(ApiSession.ended_at).is_(None))):
            open_session.ended_at = now
            session.add(open_session)
        record(session, AuditEntry(Kind.ADMIN, Action.DELETE, agent=actor, source=source,
                                   entity_ref=f"credential/{name}"[:300], detail={"op": "credential-revoke"}))


def list_credentials(engine: Engine) -> list[ApiCredential]:
    with Session(engine) as session:
        return list(session.exec(select(ApiCredential).order_by(col(ApiCredential.name))))


def login(engine: Engine, secret: str, source: str | None, *, minutes: int,
          throttle: LoginThrottle | None = None) -> LoginResult:
    """Exchanges an API key for a session token. A failure raises :class:`AuthenticationError` after
    its audit entries are committed: a failed login plus a security alert — for every failure without
    a ``throttle``, else for the address's first, then the throttle's summaries. While ``source`` is
    blocked, or when this failure blocks it, :class:`LoginThrottled` (the key is then not looked up)."""
    if throttle is not None:
        wait, due = throttle.refuse(source)
        if due:
            with transaction(engine) as session:
                record(session, *map(summary_entry, due))
        if wait is not None:
            raise LoginThrottled(wait)
    verdict: FailureVerdict | None = None
    with transaction(engine) as session:
        # Looked up by the key's SHA-256: an index comparison's timing can only reveal a prefix of a
        # hash, which says nothing usable about any key (the same holds for session tokens).
        credential = session.exec(select(ApiCredential).where(
            col(ApiCredential.secret_hash) == digest(secret))).first() if secret else None
        reason = "unknown" if credential is None else "revoked" if credential.revoked_at is not None else None
        if credential is None or reason is not None:
            verdict = throttle.failed(source) if throttle is not None else None
            entries = [summary_entry(summary) for summary in verdict.summaries] if verdict else []
            if verdict is None or verdict.audit_in_full:
                entries[:0] = [
                    AuditEntry(Kind.LOGIN, Action.EXECUTE, Outcome.MINOR_FAILURE, agent="unknown", source=source,
                               detail={"op": "login", "reason": reason}),
                    AuditEntry(Kind.SECURITY_ALERT, Action.EXECUTE, Outcome.MINOR_FAILURE, agent="unknown",
                               source=source, detail={"op": "login", "reason": reason})]
            if entries:
                record(session, *entries)
        else:
            token = secrets.token_urlsafe(32)
            now = utcnow()
            expires = now + timedelta(minutes=minutes)
            assert credential.id is not None
            session.add(ApiSession(token_hash=digest(token), credential_id=credential.id, role=credential.role,
                                   created_at=now, expires_at=expires))
            summaries = throttle.succeeded(source) if throttle is not None else ()
            record(session, *map(summary_entry, summaries),  # what happened before, first
                   AuditEntry(Kind.LOGIN, Action.EXECUTE, agent=f"user:{credential.name}",
                              agent_role=credential.role, source=source, detail={"op": "login"}))
            return LoginResult(token, Role(credential.role), expires)
    if verdict is not None and verdict.retry_after is not None:
        raise LoginThrottled(verdict.retry_after)
    raise AuthenticationError(reason or "unknown")


def summary_entry(summary: Summary) -> AuditEntry:
    """A security alert counting the failed logins of one address that were not audited one by one:
    ``reason`` ``throttled`` when it opens a block (``blocked_seconds``), else ``repeated``."""
    detail: dict[str, str | int] = {"op": "login", "reason": "throttled" if summary.blocked_seconds else "repeated",
                                    "failures": summary.failures, "refused": summary.refused}
    if summary.blocked_seconds:
        detail["blocked_seconds"] = summary.blocked_seconds
    return AuditEntry(Kind.SECURITY_ALERT, Action.EXECUTE, Outcome.MINOR_FAILURE, agent="unknown",
                      source=summary.client, detail=detail)


def live_session(session: Session, token: str) -> tuple[ApiSession, ApiCredential]:
    """The session row of a live token and its credential, or :class:`AuthenticationError`
    (``unknown``, ``ended``, ``expired``)."""
    hashed = digest(token)
    found = session.exec(select(ApiSession, ApiCredential)
                         .join(ApiCredential, col(ApiCredential.id) == col(ApiSession.credential_id))
                         .where(col(ApiSession.token_hash) == hashed)).first()
    # The lookup matched on the hash already; compare_digest keeps the final check constant-time.
    if found is None or not hmac.compare_digest(found[0].token_hash, hashed):
        raise AuthenticationError("unknown")
    api_session, credential = found
    if api_session.ended_at is not None or credential.revoked_at is not None:
        raise AuthenticationError("ended")
    if _aware(api_session.expires_at) <= utcnow():
        raise AuthenticationError("expired")
    return api_session, credential


def principal_of(api_session: ApiSession, credential: ApiCredential) -> Principal:
    assert credential.id is not None
    return Principal(credential.name, Role(api_session.role), credential.id)


def authenticate(engine: Engine, token: str) -> Principal:
    """The principal of a live session token, or :class:`AuthenticationError`."""
    with Session(engine) as session:
        return principal_of(*live_session(session, token))


def logout(engine: Engine, token: str, source: str | None = None) -> bool:
    """Ends a session; returns whether it was open."""
    with transaction(engine) as session:
        found = session.exec(select(ApiSession, ApiCredential)
                             .join(ApiCredential, col(ApiCredential.id) == col(ApiSession.credential_id))
                             .where(col(ApiSession.token_hash) == digest(token))).first()
        if found is None or found[0].ended_at is not None:
            return False
        api_session, credential = found
        api_session.ended_at = utcnow()
        session.add(api_session)
        record(session, AuditEntry(Kind.LOGIN, Action.EXECUTE, agent=f"user:{credential.name}",
                                   agent_role=api_session.role, source=source, detail={"op": "logout"}))
        return True
