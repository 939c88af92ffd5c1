"""Per-subscription notification secrets."""

from __future__ import annotations

import pytest

from ehr.hook_secrets import authorization_header, channel_header, derive_secret, verify_header

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
