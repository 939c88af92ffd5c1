"""Ed25519 public keys as JWKs: base64url, RFC 7638 thumbprints (our ``kid``), and reading the
usable keys out of a JWK Set (RFC 7517, OKP keys per RFC 8037). Only ``EdDSA`` is allowed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ALGORITHM = "EdDSA"
KID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_x(public_key: Ed25519PublicKey) -> str:
    """The JWK ``x`` member: the raw public key, base64url."""
    return b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public key: its ``kid``."""
    # Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2, RFC 8037 §2).
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": public_x(public_key)},
                           separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def public_keys(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
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
        if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
            continue
        try:
            raw = b64url_decode(str(jwk.get("x", "")))
            if len(raw) != 32:
                continue
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error):
            continue
    return keys
