"""Encryption of contact data at rest (phone numbers, inbound content) with AES-GCM, and keyed blind
indexes (HMAC-SHA256) to find it, both from ``cryptography``/the standard library.

Each value gets a fresh 96-bit nonce (NIST SP 800-38D section 8.2.2: a random nonce per value under
one key). The associated data binds the format version, the key id and the caller's context, which
names table, column and row, so a ciphertext copied to another row, column or table fails to
decrypt. Stored form: ``v2.<key id>.<nonce>.<ciphertext>`` (URL-safe base64). ``v1`` values (AD =
context only) are still read; ``bridge keys reencrypt`` rewrites them as ``v2``.

A blind index is ``<4-byte key tag> || HMAC-SHA256(index key, value)[:28]``: the tag tells which
index key made it (for rotation and ``bridge keys status``) and reveals nothing about the value.
The index keys are separate from the data keys, so rotating one leaves the other alone.

Keys come from a :class:`KeySource` (:mod:`adapter.security.keys`: settings or a wrapped keyring file) and
are never stored in the database. Errors::

    DecryptionError          wrong key, wrong row, tampered or malformed value
      UnknownKeyError        the value names a key id the key source does not hold
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
TAG_BYTES = 4
LEGACY_INDEX_LABEL = b"bridge blind index v1"


class DecryptionError(Exception):
    """A stored value could not be decrypted: wrong key, wrong row, or tampered."""


class UnknownKeyError(DecryptionError):
    """The value was encrypted under a key id this instance does not hold (even after a reload)."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"value was encrypted with key {key_id}, which the key source does not hold")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def data_key_id(key: bytes) -> str:
    """A short, non-secret fingerprint that names a data key in stored values."""
    return hashlib.sha256(b"key-id:" + key).hexdigest()[:8]


def index_key_id(key: bytes) -> str:
    """The index key's fingerprint; its 4 bytes are the tag that starts every index it makes."""
    return hashlib.sha256(b"index-key-id:" + key).hexdigest()[: 2 * TAG_BYTES]


def legacy_index_key(data_key: bytes) -> bytes:
    """The index key earlier versions derived from the data key (untagged indexes), read only."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LEGACY_INDEX_LABEL).derive(data_key)


@dataclass(frozen=True)
class KeySet:
    """One snapshot of the keys: data keys and index keys by id, which of each is active, and the
    untagged legacy index keys still accepted for lookups until ``bridge keys reindex`` has run."""

    data: Mapping[str, bytes]
    active_data: str
    index: Mapping[str, bytes]
    active_index: str
    legacy_index: tuple[bytes, ...] = field(default=())

    @classmethod
    def of(cls, data_keys: Iterable[bytes], index_keys: Iterable[bytes], *, legacy: bool = False) -> KeySet:
        """Active key first in each list; ``legacy`` also accepts indexes derived from the data keys."""
        data, index = list(data_keys), list(index_keys)
        for key in (*data, *index):
            if len(key) != KEY_BYTES:
                raise ValueError("every key must be 32 bytes")
        if set(data) & set(index):
            raise ValueError("an index key must not also be a data key")
        return cls({data_key_id(k): k for k in data}, data_key_id(data[0]),
                   {index_key_id(k): k for k in index}, index_key_id(index[0]),
                   tuple(legacy_index_key(k) for k in data) if legacy else ())


class KeySource(Protocol):
    """Where ciphers get their keys: :class:`StaticKeys`, or :class:`adapter.security.keys.Keyring`."""

    def current(self) -> KeySet: ...

    def refresh(self) -> KeySet:
        """Reloads from the source (a keyring file another process changed); returns the new set."""
        ...


class StaticKeys:
    """Keys fixed for the life of the process (settings in development, tests)."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    def current(self) -> KeySet:
        return self._keys

    def refresh(self) -> KeySet:
        return self._keys


def _source(key: bytes | KeySource) -> KeySource:
    if isinstance(key, bytes):
        # One key serves as data key, and (through HKDF under its own label) as index key.
        return StaticKeys(KeySet.of([key], [legacy_index_key(key)]))
    return key


def value_key_id(stored: str) -> tuple[str, str]:
    """(format version, key id) of a stored value, without decrypting it."""
    parts = stored.split(".")
    if len(parts) != 4 or parts[0] not in ("v1", "v2"):
        raise DecryptionError("stored value is not in the v1/v2 format")
    return parts[0], parts[1]


class FieldCipher:
    """Encrypts with the active data key; decrypts with the key the value names."""

    def __init__(self, keys: bytes | KeySource) -> None:
        self.keys = _source(keys)

    @property
    def key_id(self) -> str:
        return self.keys.current().active_data

    def current(self, stored: str) -> bool:
        """Whether ``stored`` is already ``v2`` under the active key (nothing for re-encryption to do)."""
        return stored.startswith(f"v2.{self.key_id}.")

    def encrypt(self, plaintext: str, *, context: str) -> str:
        keys = self.keys.current()
        nonce = os.urandom(12)
        aad = f"v2|{keys.active_data}|{context}".encode()
        sealed = AESGCM(keys.data[keys.active_data]).encrypt(nonce, plaintext.encode("utf-8"), aad)
        return f"v2.{keys.active_data}.{b64(nonce)}.{b64(sealed)}"

    def decrypt(self, stored: str, *, context: str, legacy_context: str | None = None) -> str:
        """``legacy_context`` is the associated data a ``v1`` value was sealed with, if it differs."""
        version, key_id = value_key_id(stored)
        key = self._key(key_id)
        legacy = legacy_context if legacy_context is not None else context
        aad = f"v2|{key_id}|{context}" if version == "v2" else legacy
        _, _, nonce, sealed = stored.split(".")
        try:
            return AESGCM(key).decrypt(unb64(nonce), unb64(sealed), aad.encode("utf-8")).decode("utf-8")
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("value does not authenticate for this row") from exc

    def _key(self, key_id: str) -> bytes:
        key = self.keys.current().data.get(key_id)
        if key is None:  # another process may just have added it to the keyring: reload once
            key = self.keys.refresh().data.get(key_id)
        if key is None:
            raise UnknownKeyError(key_id)
        return key


class BlindIndex:
    """A keyed, deterministic index of a secret value, so an encrypted phone number or user id can be
    found without decrypting every row, and without the database alone revealing it.

    Writes use the active index key; lookups use :meth:`phone_candidates` (every current key), so rows
    not yet re-indexed during a rotation are still found.
    """

    def __init__(self, keys: bytes | KeySource) -> None:
        self.keys = _source(keys)

    @property
    def key_id(self) -> str:
        return self.keys.current().active_index

    @staticmethod
    def _tagged(key_id: str, key: bytes, value: str) -> bytes:
        return bytes.fromhex(key_id) + hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()[: 32 - TAG_BYTES]

    def of(self, value: str) -> bytes:
        keys = self.keys.current()
        return self._tagged(keys.active_index, keys.index[keys.active_index], value)

    def candidates(self, value: str) -> list[bytes]:
        """The value's index under every index key held, the active one first, then legacy ones."""
        keys = self.keys.current()
        found = [self.of(value)]
        found += [self._tagged(kid, key, value) for kid, key in keys.index.items() if kid != keys.active_index]
        found += [hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest() for key in keys.legacy_index]
        return found

    @staticmethod
    def _phone_text(number: str) -> str:
        return "phone:" + "".join(ch for ch in number if ch.isdigit())

    def phone(self, number: str) -> bytes:
        """Index of a phone number, whatever its punctuation: Meta's ``wa_id`` is digits only."""
        return self.of(self._phone_text(number))

    def phone_candidates(self, number: str) -> list[bytes]:
        return self.candidates(self._phone_text(number))

    def user_id(self, bsuid: str) -> bytes:
        """Index of a business-scoped user id (e.g. ``US.1349…``), kept exactly as Meta sent it."""
        return self.of("bsuid:" + bsuid.strip())

    def user_id_candidates(self, bsuid: str) -> list[bytes]:
        return self.candidates("bsuid:" + bsuid.strip())


def index_tag(index: bytes) -> str:
    """The key id an index names (legacy untagged indexes give a meaningless id no key has)."""
    return index[:TAG_BYTES].hex()
