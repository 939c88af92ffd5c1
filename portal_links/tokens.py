"""Portal link tokens: 128 random bits, an expiry and a key id, MAC'd with HMAC-SHA256.

Layout before URL-safe base64 (37 bytes → 50 characters)::

    key id (1) | random (16) | expiry, unix seconds, big-endian (4) | HMAC-SHA256 truncated (16)

A forged, altered or expired token is refused by :meth:`LinkSigner.verify` alone, before any
database lookup, so guessing costs the database nothing. The database keeps only
:func:`token_hash` of a token (the state a signature cannot carry: purpose, target, revocation,
opens). Nothing in a token names a patient or a resource.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

_RANDOM_BYTES = 16
_MAC_BYTES = 16
_LAYOUT = struct.Struct(">B16sI")
TOKEN_BYTES = _LAYOUT.size + _MAC_BYTES


class TokenProblem(Enum):
    """Why a token was refused; the values are what the access log records."""

    MALFORMED = "malformed"  # also an unknown key id: to a client it is the same as a forgery
    EXPIRED = "expired"


class TokenRefused(Exception):
    """The token is not one of ours, or no longer valid. ``problem`` says which."""

    def __init__(self, problem: TokenProblem) -> None:
        self.problem = problem
        super().__init__(f"link token refused: {problem.value}")


@dataclass(frozen=True)
class VerifiedToken:
    key_id: int
    expires_at: datetime


def token_hash(token: str) -> bytes:
    """What the database stores and looks up: SHA-256 of the token text."""
    return hashlib.sha256(token.encode("ascii")).digest()


def key_id_for(key: bytes) -> int:
    """A one-byte, non-secret key id derived from the key itself."""
    return hashlib.sha256(b"link-key-id:" + key).digest()[0]


class LinkSigner:
    """Mints with the current key; verifies with the current key or any previous one.

    Key rotation: ``LinkSigner(new_key, previous=[old_key, ...])``. Every token carries the
    one-byte id of the key that signed it (:func:`key_id_for`), so a token minted before the
    rotation keeps verifying with its old key while new tokens are signed with the new one.
    **Operators**: keep an old key in ``previous`` until the longest link lifetime (the link TTL
    setting) has passed since the rotation, then drop it — from then on its tokens are all
    expired anyway. Dropping a key early kills its live links (they read as forgeries); to kill
    links on purpose, revoke them instead (:mod:`portal_links.revocation`). Two keys whose ids
    collide (1 in 256) are refused at construction: pick another new key.

    ``previous_keys`` (a mapping id → key) is the older spelling and still accepted.
    """

    def __init__(self, current_key: bytes, previous_keys: Mapping[int, bytes] | None = None, *,
                 previous: Iterable[bytes] = ()) -> None:
        if not current_key:
            raise ValueError("the link signing key is empty")
        self._current_id = key_id_for(current_key)
        keys: dict[int, bytes] = dict(previous_keys or {})
        for old in previous:
            old_id = key_id_for(old)
            if keys.get(old_id, old) != old:
                raise ValueError("two previous link keys share a key id; replace one of them")
            keys[old_id] = old
        if keys.get(self._current_id, current_key) != current_key:
            raise ValueError("the new link key's id collides with a previous key's; generate another new key")
        self._keys = {**keys, self._current_id: current_key}

    @property
    def current_key_id(self) -> int:
        return self._current_id

    @property
    def key_ids(self) -> frozenset[int]:
        return frozenset(self._keys)

    def _mac(self, key: bytes, body: bytes) -> bytes:
        return hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def mint(self, expires_at: datetime) -> str:
        body = _LAYOUT.pack(self._current_id, os.urandom(_RANDOM_BYTES), int(expires_at.timestamp()))
        raw = body + self._mac(self._keys[self._current_id], body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str, now: datetime | None = None) -> VerifiedToken:
        """Checks shape, key, MAC (constant time) and expiry; raises :class:`TokenRefused`."""
        if len(token) > 64 or not token.isascii():
            raise TokenRefused(TokenProblem.MALFORMED)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise TokenRefused(TokenProblem.MALFORMED) from exc
        if len(raw) != TOKEN_BYTES:
            raise TokenRefused(TokenProblem.MALFORMED)
        # Only the canonical spelling: base64 leaves slack (the last character's low bits, padding,
        # '+'/'/' for '-'/'_'), and a second spelling of a valid token would pass the MAC and cost a
        # database lookup (the row is found by the hash of the text).
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
            raise TokenRefused(TokenProblem.MALFORMED)
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        key_id, _random, expiry = _LAYOUT.unpack(body)
        key = self._keys.get(key_id)
        if key is None:
            raise TokenRefused(TokenProblem.MALFORMED)
        if not hmac.compare_digest(mac, self._mac(key, body)):
            raise TokenRefused(TokenProblem.MALFORMED)
        expires_at = datetime.fromtimestamp(expiry, UTC)
        if expires_at <= (now or datetime.now(UTC)):
            raise TokenRefused(TokenProblem.EXPIRED)
        return VerifiedToken(key_id=key_id, expires_at=expires_at)
