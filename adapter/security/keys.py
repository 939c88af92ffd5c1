"""Where the data and blind-index keys come from: settings (development) or a keyring file whose keys
are wrapped by a key-encryption key (production). Keys are never stored in the database.

Development: ``BRIDGE_DATA_ENCRYPTION_KEY`` and ``BRIDGE_BLIND_INDEX_KEY`` (separate keys), with
``BRIDGE_DATA_ENCRYPTION_KEYS_PREVIOUS`` / ``BRIDGE_BLIND_INDEX_KEYS_PREVIOUS`` during a rotation.

Production: ``BRIDGE_KEYRING_FILE``, a JSON file outside the database (mode 0600) holding each data
and index key wrapped (AES-256-GCM, the entry's kind and id as associated data) by a key-encryption
key (KEK) from a :class:`KeyWrapper`. This is envelope encryption as in NIST SP 800-57 Part 1
section 6.2 and the KMS "data key" pattern: the file alone reveals nothing. The shipped wrapper is
:class:`LocalWrappingKey` (``BRIDGE_KEY_WRAPPING_KEY`` or ``BRIDGE_KEY_WRAPPING_KEY_FILE``). AWS KMS
(``Encrypt``/``Decrypt`` on a symmetric CMK), HashiCorp Vault transit (``transit/encrypt``,
``transit/decrypt``) or Azure Key Vault (``wrapKey``/``unwrapKey``) plug in by implementing the same
two methods; keys are unwrapped once at load and kept in memory.

Key ids are non-secret fingerprints (:func:`adapter.security.crypto.data_key_id`, ``index_key_id``).
A running instance that meets a value under a key id it does not hold reloads the file once
(:meth:`Keyring.refresh`), so a key another process just added is picked up without a restart.

Errors::

    KeyringError        the file is missing, unreadable, badly formed, or not mode 0600
      WrappingError     a key does not unwrap: wrong wrapping key, or the file was tampered with
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapter.security.crypto import KEY_BYTES, KeySet, StaticKeys, b64, data_key_id, index_key_id, unb64
from adapter.settings import Settings, SettingsError, decode_key

Kind = Literal["data", "index"]
KINDS: tuple[Kind, ...] = ("data", "index")
log = logging.getLogger(__name__)
FILE_VERSION = 1
RECHECK_SECONDS = 1.0  # how often a running instance looks whether the file changed (a stat, no read)


class KeyringError(Exception):
    """The keyring file cannot be used; the message says why (never key material)."""


class WrappingError(KeyringError):
    """A wrapped key did not unwrap: the wrapping key is wrong or the file was altered."""


class KeyWrapper(Protocol):
    """A key-encryption key: a local key today, a KMS / Vault transit / Key Vault key tomorrow."""

    key_id: str

    def wrap(self, key: bytes, *, label: str) -> str: ...

    def unwrap(self, wrapped: str, *, label: str) -> bytes: ...


class LocalWrappingKey:
    """AES-256-GCM under a 32-byte wrapping key held by the process (from settings)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("the key wrapping key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = "local:" + data_key_id(b"kek:" + key)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalWrappingKey:
        if settings.key_wrapping_key_file is not None:
            return cls(decode_key(read_private_text(settings.key_wrapping_key_file).strip()))
        if settings.key_wrapping_key is None:
            raise KeyringError("keyring_file needs BRIDGE_KEY_WRAPPING_KEY or BRIDGE_KEY_WRAPPING_KEY_FILE")
        return cls(decode_key(settings.key_wrapping_key.get_secret_value()))

    def wrap(self, key: bytes, *, label: str) -> str:
        nonce = os.urandom(12)
        return f"{b64(nonce)}.{b64(self._aead.encrypt(nonce, key, label.encode()))}"

    def unwrap(self, wrapped: str, *, label: str) -> bytes:
        try:
            nonce, sealed = wrapped.split(".")
            return self._aead.decrypt(unb64(nonce), unb64(sealed), label.encode())
        except (InvalidTag, ValueError) as exc:
            raise WrappingError(f"key {label} does not unwrap: wrong key wrapping key, or the keyring file "
                                "was altered") from exc


def read_private_text(path: Path) -> str:
    """Reads a secret file, refusing one others could read (like the assertion key file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyringError(f"{path} is not a regular file")
            if mode & 0o077:
                raise KeyringError(f"{path} must be mode 0600 (is {stat.S_IMODE(mode):04o})")
            return handle.read()
    except OSError as exc:
        raise KeyringError(f"cannot read {path}: {exc.strerror}") from exc


@dataclass
class _Entry:
    key_id: str
    wrapped: str
    created_at: str


def _label(kind: Kind, key_id: str) -> str:
    return f"bridge-keyring:{kind}:{key_id}"


def _fingerprint(kind: Kind, key: bytes) -> str:
    return data_key_id(key) if kind == "data" else index_key_id(key)


class Keyring:
    """The keyring file in memory: wrapped entries, which key of each kind is active, and the
    unwrapped :class:`KeySet` (a :class:`adapter.security.crypto.KeySource`). Thread-safe."""

    def __init__(self, path: Path, wrapper: KeyWrapper) -> None:
        self.path, self.wrapper = Path(path), wrapper
        self._lock = threading.Lock()
        self._entries: dict[Kind, list[_Entry]] = {"data": [], "index": []}
        self._active: dict[Kind, str] = {}
        self._keys: KeySet | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = 0.0

    @classmethod
    def create(cls, path: Path, wrapper: KeyWrapper) -> Keyring:
        """A new file with one data key and one index key; refuses to overwrite an existing file."""
        if Path(path).exists():
            raise KeyringError(f"{path} already exists; rotate its keys instead of replacing it")
        ring = cls(path, wrapper)
        for kind in KINDS:
            ring._add(kind)
        ring.save()
        return ring

    @classmethod
    def load(cls, path: Path, wrapper: KeyWrapper) -> Keyring:
        ring = cls(path, wrapper)
        ring.refresh()
        return ring

    def current(self) -> KeySet:
        """The keys in use; reloads when the file changed (a rotation by another process makes its new
        key active here within about :data:`RECHECK_SECONDS`)."""
        now = time.monotonic()
        if self._keys is None:
            return self.refresh()
        if now - self._checked_at >= RECHECK_SECONDS:
            self._checked_at = now
            if self._file_stamp() != self._stamp:
                try:
                    return self.refresh()
                except KeyringError as exc:  # keep serving with the keys already loaded
                    log.warning("keyring file changed but could not be reloaded: %s", exc)
        return self._keys

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def refresh(self) -> KeySet:
        with self._lock:
            stamp = self._file_stamp()
            raw = self._read()
            entries: dict[Kind, list[_Entry]] = {"data": [], "index": []}
            keys: dict[Kind, dict[str, bytes]] = {"data": {}, "index": {}}
            active: dict[Kind, str] = {}
            for kind in KINDS:
                section = raw.get(kind) or {}
                for item in section.get("keys") or []:
                    entry = _Entry(str(item["id"]), str(item["wrapped"]), str(item.get("created_at", "")))
                    key = self.wrapper.unwrap(entry.wrapped, label=_label(kind, entry.key_id))
                    if _fingerprint(kind, key) != entry.key_id:
                        raise WrappingError(f"{kind} key {entry.key_id} unwraps to a different key")
                    entries[kind].append(entry)
                    keys[kind][entry.key_id] = key
                active[kind] = str(section.get("active", ""))
                if active[kind] not in keys[kind]:
                    raise KeyringError(f"{self.path}: the active {kind} key is not in the file")
            self._entries, self._active, self._stamp = entries, active, stamp
            self._keys = KeySet(keys["data"], active["data"], keys["index"], active["index"])
            return self._keys

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(read_private_text(self.path))
        except json.JSONDecodeError as exc:
            raise KeyringError(f"{self.path} is not valid JSON") from exc
        if not isinstance(raw, dict) or raw.get("version") != FILE_VERSION:
            raise KeyringError(f"{self.path} is not a version {FILE_VERSION} keyring file")
        return raw

    def _add(self, kind: Kind) -> str:
        taken = {e.key_id for entries in self._entries.values() for e in entries}
        while True:  # fingerprints are 32 bits: draw again on the (unlikely) clash
            key = os.urandom(KEY_BYTES)
            key_id = _fingerprint(kind, key)
            if key_id not in taken:
                break
        self._entries[kind].append(_Entry(key_id, self.wrapper.wrap(key, label=_label(kind, key_id)),
                                          datetime.now(UTC).isoformat(timespec="seconds")))
        self._active[kind] = key_id
        return key_id

    def rotate(self, kind: Kind) -> str:
        """Generates a key of ``kind``, makes it active, keeps the others for reading; saves; returns its id."""
        self.refresh()
        key_id = self._add(kind)
        self.save()
        self.refresh()
        return key_id

    def retire(self, key_id: str) -> Kind:
        """Removes a non-active key from the file (the caller checks no row still uses it)."""
        self.refresh()
        for kind in KINDS:
            ids = [e.key_id for e in self._entries[kind]]
            if key_id in ids:
                if self._active[kind] == key_id:
                    raise KeyringError(f"{key_id} is the active {kind} key; rotate first")
                self._entries[kind] = [e for e in self._entries[kind] if e.key_id != key_id]
                self.save()
                self.refresh()
                return kind
        raise KeyringError(f"no key {key_id} in {self.path}")

    def save(self) -> None:
        """Atomically replaces the file: a 0600 temporary file beside it, fsynced, then renamed."""
        body: dict[str, Any] = {"version": FILE_VERSION, "wrapping_key": self.wrapper.key_id}
        for kind in KINDS:
            body[kind] = {"active": self._active[kind],
                          "keys": [{"id": e.key_id, "wrapped": e.wrapped, "created_at": e.created_at}
                                   for e in self._entries[kind]]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(body, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def key_ids(self, kind: Kind) -> list[str]:
        self.current()
        return [e.key_id for e in self._entries[kind]]


def env_keys(settings: Settings) -> KeySet:
    """The development key set from settings; indexes derived from the data key by earlier versions
    are still accepted for lookups until ``bridge keys reindex`` has run."""
    return KeySet.of([settings.key_bytes("data_encryption_key"), *settings.previous_data_keys()],
                     [settings.key_bytes("blind_index_key"), *settings.previous_index_keys()], legacy=True)


def key_source(settings: Settings) -> Keyring | StaticKeys:
    """The keys the service and the CLI use: the keyring file when configured, else the settings."""
    if settings.keyring_file is not None:
        return Keyring.load(settings.keyring_file, LocalWrappingKey.from_settings(settings))
    try:
        return StaticKeys(env_keys(settings))
    except ValueError as exc:  # e.g. a previous data key reused as an index key
        raise KeyringError(f"key settings: {exc}") from exc


def service_keys(settings: Settings) -> Keyring | StaticKeys:
    """:func:`key_source` for start-up: a keyring problem becomes a settings problem, stated plainly."""
    try:
        return key_source(settings)
    except KeyringError as exc:
        raise SettingsError([str(exc)]) from exc
