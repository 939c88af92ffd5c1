"""Values several groups of settings share: the public demo placeholders (refused outside ``mode=demo``),
32-byte keys in URL-safe base64 and http(s) URLs, the last two as annotated types so each field carries
its own check.

Placeholder refusal follows fastapi/full-stack-fastapi-template's "changethis" check.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr

PACKAGE_ROOT = Path(__file__).resolve().parents[2]

# Values shipped for the demo. They are public, so they must never protect real data.
DEMO_SECRET = "demo-only-not-a-secret"  # noqa: S105 - public on purpose, refused outside demo
DEMO_KEY = base64.urlsafe_b64encode(b"demo-only-key-not-secret-32bytes").decode()
DEMO_INDEX_KEY = base64.urlsafe_b64encode(b"demo-only-index-key-not-secret!!").decode()
_PLACEHOLDER_PREFIXES = ("demo-", "change", "placeholder", "secret", "xxx", "todo")


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return not lowered or lowered.startswith(_PLACEHOLDER_PREFIXES) or value in (DEMO_SECRET, DEMO_KEY, DEMO_INDEX_KEY)


def decode_key(value: str) -> bytes:
    """A key setting's bytes; also used for key files read outside the settings (adapter.security.keys)."""
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be 32 random bytes in URL-safe base64 (`bridge keys-new` makes one)") from exc


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} must start with http:// or https://")
    return value.rstrip("/")


def _key_length(value: SecretStr) -> SecretStr:
    if len(decode_key(value.get_secret_value())) != 32:
        raise ValueError("must decode to exactly 32 bytes (`bridge keys-new` makes one)")
    return value


def _previous_keys(value: list[SecretStr]) -> list[SecretStr]:
    for key in value:
        if len(decode_key(key.get_secret_value())) != 32:
            raise ValueError("each previous key must decode to exactly 32 bytes")
    return value


WebUrl = Annotated[str, AfterValidator(_http_url)]
"""An http(s) URL, kept without its trailing slash."""
Key32 = Annotated[SecretStr, AfterValidator(_key_length)]
"""A secret key of exactly 32 bytes in URL-safe base64."""
PreviousKeys = Annotated[list[SecretStr], AfterValidator(_previous_keys)]
"""Earlier 32-byte keys still accepted during a rotation."""
