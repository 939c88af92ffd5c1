"""The hand-off assertions' time rules: lifetimes, verification leeway, the JWKS cache age, and
aware UTC times for all of them.

An assertion lives at most :data:`MAX_ASSERTION_LIFETIME`, so a retired key need stay published
only that long after its last signature; a ``next`` key is published at least
:data:`JWKS_MAX_AGE_SECONDS` before it signs, so portals' cached JWK Sets already hold it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MAX_ASSERTION_LIFETIME = timedelta(seconds=120)
DEFAULT_ASSERTION_LIFETIME = timedelta(seconds=60)
JWKS_MAX_AGE_SECONDS = 300
DEFAULT_LEEWAY_SECONDS = 5


def aware(now: datetime | None) -> datetime:
    """``now`` in UTC (the current time when None); a naive time is refused."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("naive datetime; pass a timezone-aware time")
    return now.astimezone(UTC)
