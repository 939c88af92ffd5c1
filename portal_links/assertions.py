"""Optional hand-off to the hospital's portal: short-lived EdDSA (Ed25519) signed assertions.

After a patient redeems a portal link, we may send the portal a JWT (RFC 7519, following the
RFC 8725 best practices) saying "this is the patient with portal pseudonym X"; the portal still
decides whether that is enough or whether it asks the patient to log in. The portal verifies the
JWT with our public keys, which we publish as a JWK Set (RFC 7517, OKP keys per RFC 8037) at
``/.well-known/jwks.json`` (see :mod:`portal_links.jwks`).

Keys live in a :class:`AssertionKeyRing`, stored **outside the database** in a JSON file that only
the service user can read (mode 0600)::

    {
      "format": "portal-assertion-keys",
      "version": 1,
      "keys": [
        {"kid": "<RFC 7638 thumbprint>", "state": "active" | "next" | "retired",
         "created_at": "<ISO 8601, UTC>", "retired_at": "<ISO 8601, UTC>" | null,
         "private_key_pem": "<PKCS8 PEM, e.g. example BEGIN PRIVATE KEY block>"}
      ]
    }

Rotation without downtime: a ``next`` key is published (in the JWKS) before it ever signs, so by
the time :meth:`AssertionKeyRing.rotate` makes it ``active`` the portal already has it cached;
the previous ``active`` key becomes ``retired`` and stays published until every assertion it
signed has expired, after which :meth:`AssertionKeyRing.prune` drops it.

:class:`AssertionVerifier` is the reference for what a portal runs (and what the tests run).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
MAX_ASSERTION_LIFETIME = timedelta(seconds=120)
DEFAULT_ASSERTION_LIFETIME = timedelta(seconds=60)
JWKS_MAX_AGE_SECONDS = 300
DEFAULT_LEEWAY_SECONDS = 5
DEFAULT_REPLAY_CACHE_SIZE = 100_000
MAX_TOKEN_CHARS = 4096

_FILE_FORMAT = "portal-assertion-keys"
_FILE_VERSION = 1
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUBJECT_RE = re.compile(r"[A-Za-z0-9._~:@+=-]{1,255}")
_JTI_MAX_CHARS = 128


class KeyState(Enum):
    NEXT = "next"  # published, not yet signing
    ACTIVE = "active"  # signing; exactly one
    RETIRED = "retired"  # published until retired_at + max assertion lifetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_x(public_key: Ed25519PublicKey) -> str:
    return _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public key: its ``kid``."""
    # Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2, RFC 8037 §2).
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _public_x(public_key)},
                           separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("naive datetime; pass a timezone-aware time")
    return now.astimezone(UTC)


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("time must be an ISO 8601 string")
    return _aware(datetime.fromisoformat(text))


@dataclass(frozen=True)
class AssertionKey:
    kid: str
    state: KeyState
    created_at: datetime
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    retired_at: datetime | None = None

    @classmethod
    def generate(cls, state: KeyState, now: datetime) -> AssertionKey:
        private_key = Ed25519PrivateKey.generate()
        return cls(kid=jwk_thumbprint(private_key.public_key()), state=state, created_at=now,
                   private_key=private_key)

    def public_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": _public_x(self.private_key.public_key()), "kid": self.kid,
                "use": "sig", "alg": ALGORITHM}

    def _to_file(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode("ascii")
        return {"kid": self.kid, "state": self.state.value, "created_at": self.created_at.isoformat(),
                "retired_at": self.retired_at.isoformat() if self.retired_at else None, "private_key_pem": pem}

    @classmethod
    def _from_file(cls, entry: Mapping[str, Any]) -> AssertionKey:
        private_key = serialization.load_pem_private_key(str(entry["private_key_pem"]).encode("ascii"), None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError("assertion keys must be Ed25519")
        kid = jwk_thumbprint(private_key.public_key())
        if entry.get("kid") != kid:
            raise ValueError("a key's kid does not match its RFC 7638 thumbprint")
        state = KeyState(entry["state"])
        retired_raw = entry.get("retired_at")
        retired_at = _parse_time(retired_raw) if retired_raw is not None else None
        if (state is KeyState.RETIRED) != (retired_at is not None):
            raise ValueError("retired_at must be set exactly for retired keys")
        return cls(kid=kid, state=state, created_at=_parse_time(entry["created_at"]), private_key=private_key,
                   retired_at=retired_at)


@dataclass(frozen=True)
class AssertionKeyRing:
    """Immutable: :meth:`rotate` and :meth:`prune` return a new ring; :meth:`save` persists it."""

    keys: tuple[AssertionKey, ...]

    def __post_init__(self) -> None:
        states = [k.state for k in self.keys]
        if states.count(KeyState.ACTIVE) != 1:
            raise ValueError("a key ring needs exactly one active key")
        if states.count(KeyState.NEXT) > 1:
            raise ValueError("a key ring has at most one next key")
        if len({k.kid for k in self.keys}) != len(self.keys):
            raise ValueError("duplicate kid in the key ring")

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def generate(cls, now: datetime | None = None) -> AssertionKeyRing:
        """A fresh ring in memory: one active key and one next key."""
        at = _aware(now)
        return cls((AssertionKey.generate(KeyState.ACTIVE, at), AssertionKey.generate(KeyState.NEXT, at)))

    @classmethod
    def create(cls, path: str | os.PathLike[str], now: datetime | None = None) -> AssertionKeyRing:
        """Generates a ring and saves it to ``path``; refuses to overwrite an existing key file."""
        if Path(path).exists():
            raise FileExistsError(f"refusing to overwrite the existing key file {os.fspath(path)!r}")
        ring = cls.generate(now)
        ring.save(path)
        return ring

    def rotate(self, now: datetime | None = None, *,
               min_published: timedelta = timedelta(seconds=JWKS_MAX_AGE_SECONDS)) -> AssertionKeyRing:
        """Next → active, active → retired at ``now``, and a new next key.

        Refuses (``ValueError``) while the next key has been published for less than
        ``min_published`` (default: the JWKS ``max-age``), since a portal's cached JWKS might not
        have it yet. Pass ``timedelta(0)`` for an emergency rotation (a leaked active key).
        """
        at = _aware(now)
        nxt = self.next_key
        if nxt is None:
            raise ValueError("no next key to promote")
        if at < nxt.created_at + min_published:
            raise ValueError("the next key has not been published long enough for portals' JWKS caches")
        rotated: list[AssertionKey] = []
        for key in self.keys:
            if key.state is KeyState.ACTIVE:
                rotated.append(replace(key, state=KeyState.RETIRED, retired_at=at))
            elif key.state is KeyState.NEXT:
                rotated.append(replace(key, state=KeyState.ACTIVE))
            else:
                rotated.append(key)
        rotated.append(AssertionKey.generate(KeyState.NEXT, at))
        return AssertionKeyRing(tuple(rotated))

    def prune(self, now: datetime | None = None,
              max_lifetime: timedelta = MAX_ASSERTION_LIFETIME) -> AssertionKeyRing:
        """Drops keys retired at least ``max_lifetime`` ago (nothing they signed is still valid).

        Pass the verifier's leeway on top of the lifetime if portals verify with one.
        """
        at = _aware(now)
        return AssertionKeyRing(tuple(
            k for k in self.keys
            if not (k.state is KeyState.RETIRED and k.retired_at is not None and k.retired_at + max_lifetime <= at)))

    # --- views ---------------------------------------------------------------------------------

    @property
    def active_key(self) -> AssertionKey:
        return next(k for k in self.keys if k.state is KeyState.ACTIVE)

    @property
    def next_key(self) -> AssertionKey | None:
        return next((k for k in self.keys if k.state is KeyState.NEXT), None)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set: active, next and not-yet-pruned retired keys. Never any ``d``."""
        order = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}
        return {"keys": [k.public_jwk() for k in sorted(self.keys, key=lambda k: order[k.state])]}

    # --- storage -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AssertionKeyRing:
        """Reads a key file; refuses one that group or others may read or write (like ssh does)."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ValueError("the key file is not a regular file")
            if mode & 0o077:
                raise PermissionError(f"key file {os.fspath(path)!r} must be mode 0600 (is {stat.S_IMODE(mode):04o})")
            document = json.loads(handle.read())
        if not isinstance(document, dict) or document.get("format") != _FILE_FORMAT:
            raise ValueError("not a portal assertion key file")
        if document.get("version") != _FILE_VERSION:
            raise ValueError(f"unsupported key file version {document.get('version')!r}")
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError("the key file has no key list")
        return cls(tuple(AssertionKey._from_file(entry) for entry in entries))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically replaces ``path``: writes a 0600 temporary file beside it, fsyncs, renames."""
        target = Path(path)
        document = {"format": _FILE_FORMAT, "version": _FILE_VERSION, "keys": [k._to_file() for k in self.keys]}
        data = json.dumps(document, indent=2).encode("ascii") + b"\n"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
        iat = int(_aware(now).timestamp())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": subject_pseudonym, "iat": iat, "nbf": iat,
                  "exp": iat + int(self.lifetime.total_seconds()), "jti": _b64url(secrets.token_bytes(16))}
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})


class AssertionRefused(Exception):
    """The assertion is not acceptable; ``reason`` is a short code. The token is never included."""

    REASONS = frozenset({"malformed", "alg_not_allowed", "bad_header", "bad_kid", "unknown_kid", "bad_signature",
                         "missing_claim", "bad_claim", "wrong_issuer", "wrong_audience", "expired",
                         "not_yet_valid", "lifetime_too_long", "replayed", "replay_cache_full"})

    def __init__(self, reason: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        super().__init__(f"assertion refused: {reason}")


def _public_keys(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The usable keys of a JWK Set: OKP/Ed25519 signing keys with a well-formed kid; others skipped."""
    keys: dict[str, Ed25519PublicKey] = {}
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("not a JWK Set")
    for jwk in entries:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig" or "d" in jwk:
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            continue
        try:
            raw = _b64url_decode(str(jwk.get("x", "")))
            if len(raw) != 32:
                continue
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error):
            continue
    return keys


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed strictly by us so each problem gets its own reason code."""
    try:
        header = json.loads(_b64url_decode(token.split(".", 1)[0]))
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
        self._keys = _public_keys(jwks)
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
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
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
        return self._check_claims(claims, _aware(now).timestamp())

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
