"""The Ed25519 key that signs audit checkpoints and export manifests, kept outside the database.

The private key is a PKCS#8 PEM file readable only by the service user (``bridge audit keygen``
writes it with mode 0600); auditors verify with the public key (``bridge audit public-key``), which
can be handed to them, printed into an audit report, or stored with the exported checkpoints.
The key id is the key's RFC 7638 JWK thumbprint, the same naming the portal assertion keys use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from portal_links.assertions.jwk import jwk_thumbprint


class AuditKeyError(Exception):
    """The audit signing key file is missing, unreadable, or not an Ed25519 key."""


@dataclass(frozen=True)
class AuditPublicKey:
    """What a verifier needs: the public key and its id."""

    key: Ed25519PublicKey
    key_id: str

    @classmethod
    def from_pem(cls, pem: bytes) -> AuditPublicKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise AuditKeyError("the audit public key is not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError("the audit public key is not an Ed25519 key")
        return cls(key, jwk_thumbprint(key))

    @classmethod
    def load(cls, path: Path) -> AuditPublicKey:
        """A public key file, or the public half of a private key file."""
        data = _read(path)
        if b"PRIVATE KEY" in data:
            return AuditSigner.from_pem(data).public
        return cls.from_pem(data)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> str:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


@dataclass(frozen=True)
class AuditSigner:
    """Signs with the private key; ``public`` is what verifiers get."""

    private_key: Ed25519PrivateKey
    public: AuditPublicKey

    @classmethod
    def from_pem(cls, pem: bytes) -> AuditSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise AuditKeyError("the audit signing key is not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError("the audit signing key is not an Ed25519 key")
        return cls._of(key)

    @classmethod
    def load(cls, path: Path) -> AuditSigner:
        return cls.from_pem(_read(path))

    @classmethod
    def throwaway(cls) -> AuditSigner:
        """A key that lives only as long as the process: for demo mode, never for production."""
        return cls._of(Ed25519PrivateKey.generate())

    @classmethod
    def generate_file(cls, path: Path) -> AuditSigner:
        """Writes a new private key to ``path`` (mode 0600); refuses to overwrite an existing one."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise AuditKeyError(f"{path} exists already; the audit signing key is never overwritten") from exc
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        return cls._of(key)

    @classmethod
    def _of(cls, key: Ed25519PrivateKey) -> AuditSigner:
        public = key.public_key()
        return cls(key, AuditPublicKey(public, jwk_thumbprint(public)))

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read the audit key file {path}: {exc.strerror}") from exc
