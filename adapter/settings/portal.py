"""Settings of the portal links: the patient portal they open, the keys that sign their tokens (with the
earlier keys that still verify during a rotation), their lifetime, the rate limit on unknown tokens, and
the hand-off assertion and pseudonym shared with the portal."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from adapter.settings.values import DEMO_KEY, Key32, PreviousKeys, WebUrl, decode_key

MAX_LINK_TTL_HOURS = 7 * 24


class PortalSettings(BaseModel):
    # --- portal links
    portal_base_url: WebUrl = Field(
        "http://127.0.0.1:8000/portal-demo", description="The hospital's authenticated patient portal."
    )
    link_signing_key: Key32 = Field(SecretStr(DEMO_KEY), description="32-byte key that signs link tokens.")
    link_ttl_hours: int = Field(72, ge=1, le=MAX_LINK_TTL_HOURS, description="How long a portal link works.")
    link_signing_keys_previous: PreviousKeys = Field(
        default_factory=list,
        description="Earlier link keys that still verify (keep each until the longest link lifetime has passed).",
    )
    link_unknown_per_minute: int = Field(
        20, ge=1, le=10_000, description="Unknown, forged or expired link requests allowed per address per minute."
    )
    portal_assertion_keys_file: Path | None = Field(
        None, description="Ed25519 key file (outside the database) that signs hand-off assertions to the portal; "
        "unset: no assertion."
    )
    portal_assertion_audience: str = Field("patient-portal", description="`aud` of the hand-off assertions.")
    portal_pseudonym_key: Key32 | None = Field(
        None, description="Key shared with the portal that turns a patient reference into the portal's pseudonym."
    )

    def previous_link_keys(self) -> list[bytes]:
        return [decode_key(key.get_secret_value()) for key in self.link_signing_keys_previous]
