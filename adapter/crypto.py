"""Encryption of contact data at rest (phone numbers), with AES-GCM from ``cryptography``.

Each value gets a fresh 96-bit nonce; the table, column and row identity are bound in as
associated data, so a ciphertext copied to another row or column fails to decrypt. The stored
form is ``v1.<key id>.<nonce>.<ciphertext>`` (URL-safe base64), so keys can rotate later.
Keys come from settings and are never stored in the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class DecryptionError(Exception):
    """A stored value could not be decrypted: wrong key, wrong row, or tampered."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FieldCipher:
    """Encrypts and decrypts single field values with one data key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the data encryption key must be 32 bytes")
        self._aead = AESGCM(key)
        # A short, non-secret fingerprint names the key in stored values.
        self.key_id = hashlib.sha256(b"key-id:" + key).hexdigest()[:8]

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return f"v1.{self.key_id}.{_b64(nonce)}.{_b64(sealed)}"

    def decrypt(self, stored: str, *, context: str) -> str:
        try:
            version, key_id, nonce, sealed = stored.split(".")
        except ValueError as exc:
            raise DecryptionError("stored value is not in the v1 format") from exc
        if version != "v1" or key_id != self.key_id:
            raise DecryptionError(f"value was encrypted with key {key_id}, not the configured key")
        try:
            return self._aead.decrypt(_unb64(nonce), _unb64(sealed), context.encode("utf-8")).decode("utf-8")
        except InvalidTag as exc:
            raise DecryptionError("value does not authenticate for this row") from exc


class BlindIndex:
    """A keyed, deterministic index of a secret value (HMAC-SHA256), so an encrypted phone number or
    user id can be found without decrypting every row, and without the database alone revealing it.

    The index key is derived from the configured key with HKDF under its own label, so the index
    and the ciphertexts never share a key.
    """

    def __init__(self, key: bytes, *, label: bytes = b"bridge blind index v1") -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(key)

    def of(self, value: str) -> bytes:
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).digest()

    def phone(self, number: str) -> bytes:
        """Index of a phone number, whatever its punctuation: Meta's ``wa_id`` is digits only."""
        return self.of("phone:" + "".join(ch for ch in number if ch.isdigit()))

    def user_id(self, bsuid: str) -> bytes:
        """Index of a business-scoped user id (e.g. ``US.1349…``), kept exactly as Meta sent it."""
        return self.of("bsuid:" + bsuid.strip())
