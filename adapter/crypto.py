"""Encryption of contact data at rest (phone numbers), with AES-GCM from ``cryptography``.

Each value gets a fresh 96-bit nonce; the table, column and row identity are bound in as
associated data, so a ciphertext copied to another row or column fails to decrypt. The stored
form is ``v1.<key id>.<nonce>.<ciphertext>`` (URL-safe base64), so keys can rotate later.
Keys come from settings and are never stored in the database.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


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
