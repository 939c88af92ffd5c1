"""Per-subscription notification secrets."""

from __future__ import annotations

import pytest

from ehr.hook_secrets import (
    authorization_header,
    body_signature,
    channel_header,
    derive_secret,
    verify_header,
    verify_signature,
)

MASTER = b"synthetic-master-secret-for-tests"


def test_derived_secrets_are_stable_distinct_and_url_safe() -> None:
    first = derive_secret(MASTER, "appointment")
    assert first == derive_secret(MASTER, "appointment")
    assert first != derive_secret(MASTER, "diagnostic-report")
    assert first != derive_secret(b"another-master-secret-123", "appointment")
    assert len(first) == 43 and all(ch.isalnum() or ch in "-_" for ch in first)


def test_a_short_master_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        derive_secret(b"short", "appointment")


def test_verify_header() -> None:
    secret = derive_secret(MASTER, "appointment")
    assert channel_header(secret) == f"Authorization: Bearer {secret}"
    assert verify_header(authorization_header(secret), secret)
    assert verify_header(f"Bearer {secret}", secret)
    assert verify_header(f"bearer {secret}", secret)
    assert not verify_header(None, secret)
    assert not verify_header("", secret)
    assert not verify_header(secret, secret)
    assert not verify_header(f"Basic {secret}", secret)
    assert not verify_header(f"Bearer {secret}x", secret)
    assert not verify_header(f"Bearer {derive_secret(MASTER, 'diagnostic-report')}", secret)
    assert not verify_header("Bearer ", "")


def test_verify_signature() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    body = b"what do ya want for nothing?"
    assert body_signature("Jefe", body) == expected
    assert verify_signature(expected, body, "Jefe")
    assert verify_signature(expected.upper(), body, "Jefe")
    assert not verify_signature(expected, body + b" ", "Jefe")
    assert not verify_signature(None, body, "Jefe")
    assert not verify_signature("", body, "Jefe")
    assert not verify_signature("\u00e9" * 64, body, "Jefe")
    assert not verify_signature(expected, body, "")
