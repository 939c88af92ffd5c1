"""The key that signs SMART Backend Services client assertions, and its public JWKS.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html#registering-a-smart-backend-service-communicating-public-keys)
has the client register a public key as a JWK Set and sign each client assertion with the private
key, using ``RS384`` (RSA, 2048 bits or more) or ``ES384`` (EC P-384). The ``kid`` defaults to the
key's RFC 7638 thumbprint, so ``bridge smart keygen`` and the running service agree on it without a
setting. Key material is never part of an error message or a ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

SigningAlg = Literal["RS384", "ES384"]
SIGNING_ALGS: tuple[SigningAlg, ...] = ("RS384", "ES384")
MIN_RSA_BITS = 2048
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class SmartKeyError(ValueError):
    """The SMART private key file is missing, unreadable or of a kind SMART does not allow."""


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private key with the algorithm it signs with and the ``kid`` the EHR knows it by."""

    private_key: PrivateKey = field(repr=False)
    alg: SigningAlg
    kid: str

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (RFC 7517) with ``alg``, ``use=sig`` and ``kid``."""
        return {**_bare_public_jwk(self.private_key), "alg": self.alg, "use": "sig", "key_ops": ["verify"],
                "kid": self.kid}

    def jwks(self) -> dict[str, Any]:
        """The JWK Set to register with the EHR (or to publish at a JWKS URL)."""
        return {"keys": [self.public_jwk()]}

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: store it with mode 0600 outside the database."""
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


def generate_signing_key(alg: SigningAlg) -> SigningKey:
    """A new RSA 3072-bit (``RS384``) or EC P-384 (``ES384``) key."""
    key: PrivateKey
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    elif alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        raise SmartKeyError(f"unsupported algorithm {alg!r}: SMART Backend Services uses RS384 or ES384")
    return SigningKey(key, alg, jwk_thumbprint(_bare_public_jwk(key)))


def load_signing_key(path: Path, kid: str | None = None) -> SigningKey:
    """Loads an unencrypted PEM private key; the algorithm follows from the key type."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SmartKeyError(f"cannot read the SMART private key file {path} ({exc.strerror or type(exc).__name__})"
                            ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # The message of the cause never contains key bytes, but keep ours generic anyway.
        raise SmartKeyError(f"{path} is not an unencrypted PEM private key") from exc
    checked, alg = _checked(key, path)
    return SigningKey(checked, alg, kid or jwk_thumbprint(_bare_public_jwk(checked)))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of an RSA or EC public JWK."""
    if jwk["kty"] == "RSA":
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    else:
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _checked(key: object, path: Path) -> tuple[PrivateKey, SigningAlg]:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise SmartKeyError(f"{path}: an RSA key for RS384 needs at least {MIN_RSA_BITS} bits")
        return key, "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise SmartKeyError(f"{path}: an EC key for ES384 must be on the P-384 curve, not {key.curve.name}")
        return key, "ES384"
    raise SmartKeyError(f"{path}: SMART Backend Services needs an RSA (RS384) or EC P-384 (ES384) key")


def _bare_public_jwk(key: PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(public, as_dict=True))
    return dict(ECAlgorithm.to_jwk(public, as_dict=True))
