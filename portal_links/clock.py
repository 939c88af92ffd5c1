"""The portal links' clock: aware UTC, the same time base as every table of the service."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(UTC)
