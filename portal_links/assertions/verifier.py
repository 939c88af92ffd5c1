"""The reference verification of a hand-off assertion: what a portal runs on our JWTs (and what the
tests run), following RFC 8725: the algorithm pinned to ``EdDSA``, every claim checked, each
assertion accepted once."""

from __future__ import annotations

import binascii
import json
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .jwk import ALGORITHM, KID_RE, b64url_decode, public_keys
from .timing import DEFAULT_LEEWAY_SECONDS, MAX_ASSERTION_LIFETIME, aware

DEFAULT_REPLAY_CACHE_SIZE = 100_000
MAX_TOKEN_CHARS = 4096
_JTI_MAX_CHARS = 128


class AssertionRefused(Exception):
    """The assertion is not acceptable; ``reason`` is a short code. The token is never included."""

    REASONS = frozenset({"malformed", "alg_not_allowed", "bad_header", "bad_kid", "unknown_kid", "bad_signature",
                         "missing_claim", "bad_claim", "wrong_issuer", "wrong_audience", "expired",
                         "not_yet_valid", "lifetime_too_long", "replayed", "replay_cache_full"})

    def __init__(self, reason: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        super().__init__(f"assertion refused: {reason}")


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed strictly by us so each problem gets its own reason code."""
    try:
        header = json.loads(b64url_decode(token.split(".", 1)[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AssertionRefused("malformed") from None
    if not isinstance(header, dict):
        raise AssertionRefused("malformed")
    return header


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssertionRefused("bad_claim")
    return float(value)


class AssertionVerifier:
    """The reference verification a portal runs on our assertions.

    Checks, in order: size and shape; header (``alg`` must be ``EdDSA`` — so ``none`` and HMAC
    tokens are refused before any key is touched; ``typ`` if present must be ``JWT``; no ``crit``);
    ``kid`` syntax (base64url, ≤ 64 characters) before any lookup; known ``kid``; the signature
    with ``algorithms=["EdDSA"]`` pinned; ``iss`` and ``aud`` exact; ``exp``/``nbf``/``iat`` with
    ``leeway_seconds``; lifetime ≤ 120 s; single use of ``jti`` (in-memory, until ``exp``).
    """

    def __init__(self, jwks: Mapping[str, Any], issuer: str, audience: str,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
                 replay_cache_size: int = DEFAULT_REPLAY_CACHE_SIZE) -> None:
        if leeway_seconds < 0 or replay_cache_size < 1:
            raise ValueError("leeway must be ≥ 0 and the replay cache size ≥ 1")
        self._keys = public_keys(jwks)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self._replay_cache_size = replay_cache_size
        self._seen: dict[str, float] = {}  # jti -> time after which it may be forgotten
        self._lock = threading.Lock()

    @property
    def kids(self) -> Iterable[str]:
        return tuple(self._keys)

    def _public_key(self, kid: str) -> Ed25519PublicKey:
        key = self._keys.get(kid)
        if key is None:
            raise AssertionRefused("unknown_kid")
        return key

    def verify(self, token: str, now: datetime | None = None) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AssertionRefused("malformed")
        header = _unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise AssertionRefused("alg_not_allowed")
        if header.get("typ", "JWT") != "JWT" or "crit" in header:
            raise AssertionRefused("bad_header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
            raise AssertionRefused("bad_kid")
        public_key = self._public_key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, public_key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                options={"verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "strict_aud": True, "require": ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]})
        except jwt.InvalidSignatureError:
            raise AssertionRefused("bad_signature") from None
        except jwt.InvalidAlgorithmError:
            raise AssertionRefused("alg_not_allowed") from None
        except jwt.MissingRequiredClaimError:
            raise AssertionRefused("missing_claim") from None
        except jwt.InvalidIssuerError:
            raise AssertionRefused("wrong_issuer") from None
        except jwt.InvalidAudienceError:
            raise AssertionRefused("wrong_audience") from None
        except jwt.PyJWTError:
            raise AssertionRefused("malformed") from None
        return self._check_claims(claims, aware(now).timestamp())

    def _check_claims(self, claims: dict[str, Any], now: float) -> dict[str, Any]:
        iat, nbf, exp = (_numeric_date(claims, name) for name in ("iat", "nbf", "exp"))
        sub, jti = claims.get("sub"), claims.get("jti")
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not 0 < len(jti) <= _JTI_MAX_CHARS:
            raise AssertionRefused("bad_claim")
        if exp <= iat or exp <= nbf:
            raise AssertionRefused("bad_claim")
        if exp - min(iat, nbf) > MAX_ASSERTION_LIFETIME.total_seconds():
            raise AssertionRefused("lifetime_too_long")
        if now >= exp + self.leeway:
            raise AssertionRefused("expired")
        if nbf > now + self.leeway or iat > now + self.leeway:
            raise AssertionRefused("not_yet_valid")
        self._remember(jti, exp + self.leeway, now)
        return claims

    def _remember(self, jti: str, forget_after: float, now: float) -> None:
        with self._lock:
            if jti in self._seen and self._seen[jti] > now:
                raise AssertionRefused("replayed")
            if len(self._seen) >= self._replay_cache_size:
                self._seen = {j: t for j, t in self._seen.items() if t > now}
                if len(self._seen) >= self._replay_cache_size:
                    # Fail closed: forgetting a live jti would allow a replay. Only valid, signed
                    # assertions reach this point, so a forger cannot fill the cache.
                    raise AssertionRefused("replay_cache_full")
            self._seen[jti] = forget_after
