"""Signing a hand-off assertion: a JWT (RFC 7519) naming the patient by the portal's pseudonym,
signed with the key ring's active key, valid for at most :data:`.timing.MAX_ASSERTION_LIFETIME`."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import jwt

from .jwk import ALGORITHM, b64url
from .keyring import AssertionKeyRing
from .timing import DEFAULT_ASSERTION_LIFETIME, MAX_ASSERTION_LIFETIME, aware

_SUBJECT_RE = re.compile(r"[A-Za-z0-9._~:@+=-]{1,255}")


class AssertionIssuer:
    """Signs assertions with the ring's active key.

    ``ring`` may be a ring or a callable returning the current one (so a rotation is picked up
    without rebuilding the issuer).
    """

    def __init__(self, ring: AssertionKeyRing | Callable[[], AssertionKeyRing], issuer: str, audience: str,
                 lifetime: timedelta = DEFAULT_ASSERTION_LIFETIME) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if not timedelta(0) < lifetime <= MAX_ASSERTION_LIFETIME:
            raise ValueError(f"assertion lifetime must be in (0, {MAX_ASSERTION_LIFETIME.total_seconds():.0f}] s")
        if lifetime.total_seconds() != int(lifetime.total_seconds()):
            raise ValueError("assertion lifetime must be whole seconds")
        self._get_ring = ring if callable(ring) else (lambda: ring)
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime

    def issue(self, subject_pseudonym: str, now: datetime | None = None) -> str:
        """A JWT whose ``sub`` is the portal's pseudonym for the patient (never a FHIR id, never PHI).

        A subject that looks like a FHIR reference (contains ``/``) or has odd characters is refused.
        """
        if not isinstance(subject_pseudonym, str) or not _SUBJECT_RE.fullmatch(subject_pseudonym):
            raise ValueError("subject must be the portal's opaque pseudonym (1-255 URL-safe characters, no '/')")
        key = self._get_ring().active_key
        iat = int(aware(now).timestamp())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": subject_pseudonym, "iat": iat, "nbf": iat,
                  "exp": iat + int(self.lifetime.total_seconds()), "jti": b64url(secrets.token_bytes(16))}
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})

