"""The portal-assertion signing keys: a ring of Ed25519 keys, their rotation, and their key file.

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
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .jwk import ALGORITHM, jwk_thumbprint, public_x
from .timing import JWKS_MAX_AGE_SECONDS, MAX_ASSERTION_LIFETIME, aware

_FILE_FORMAT = "portal-assertion-keys"
_FILE_VERSION = 1


class KeyState(Enum):
    NEXT = "next"  # published, not yet signing
    ACTIVE = "active"  # signing; exactly one
    RETIRED = "retired"  # published until retired_at + max assertion lifetime


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("time must be an ISO 8601 string")
    return aware(datetime.fromisoformat(text))


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
        return {"kty": "OKP", "crv": "Ed25519", "x": public_x(self.private_key.public_key()), "kid": self.kid,
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
        at = aware(now)
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
        at = aware(now)
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
        at = aware(now)
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

