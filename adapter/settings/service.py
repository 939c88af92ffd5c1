"""Settings of the service itself: its mode, where it listens, its database, and the keys that protect
phone numbers at rest (the data and blind-index keys, directly or wrapped in a keyring file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from adapter.settings.values import DEMO_INDEX_KEY, DEMO_KEY, Key32, PreviousKeys, WebUrl, decode_key, is_placeholder


class ServiceSettings(BaseModel):
    mode: Literal["production", "demo"] = Field(
        "production", description="`demo` accepts the shipped placeholder secrets; `production` refuses them."
    )
    # --- the service itself
    public_base_url: WebUrl = Field(
        "http://127.0.0.1:8000", description="Where the EHR and Meta reach this service (scheme, host, port)."
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    database_url: str = Field(
        "sqlite:///./bridge.db", description="SQLAlchemy URL: a SQLite file, or postgresql+psycopg://…"
    )
    data_encryption_key: Key32 = Field(
        SecretStr(DEMO_KEY), description="32-byte URL-safe base64 key that encrypts phone numbers at rest."
    )
    blind_index_key: Key32 = Field(
        SecretStr(DEMO_INDEX_KEY), description="32-byte key of the blind indexes that find encrypted numbers "
        "(must differ from the data key)."
    )
    data_encryption_keys_previous: PreviousKeys = Field(
        default_factory=list, description="Earlier data keys, still decrypting until `bridge keys reencrypt` has run."
    )
    blind_index_keys_previous: PreviousKeys = Field(
        default_factory=list, description="Earlier index keys, still used for lookups until `bridge keys reindex` "
        "has run."
    )
    keyring_file: Path | None = Field(
        None, description="Keyring file (JSON, mode 0600, outside the database) of wrapped data and index keys; "
        "when set, it replaces the two key settings above."
    )
    key_wrapping_key: Key32 | None = Field(
        None, description="32-byte key-encryption key that unwraps the keyring file's keys."
    )
    key_wrapping_key_file: Path | None = Field(
        None, description="File (mode 0600) holding the key-encryption key instead of BRIDGE_KEY_WRAPPING_KEY."
    )
    # --- operations
    log_format: Literal["text", "json"] = Field(
        "text", description="`text`: one readable line per record; `json`: one JSON object per line, with the "
        "`event_id` that follows a notification from intake to status."
    )
    readiness_checks_sending: bool = Field(
        False, description="`GET /readyz` also answers 503 while sending is paused by an account-level WhatsApp "
        "error (the instance then stops receiving EHR notifications and webhooks from a load balancer)."
    )

    def _key_problems(self) -> list[str]:
        problems = []
        if self.keyring_file is None and self.key_bytes("blind_index_key") == self.key_bytes("data_encryption_key"):
            problems.append("blind_index_key must differ from data_encryption_key (`bridge keys-new` makes one)")
        if self.keyring_file is not None:
            if self.key_wrapping_key is None and self.key_wrapping_key_file is None:
                problems.append("keyring_file needs BRIDGE_KEY_WRAPPING_KEY or BRIDGE_KEY_WRAPPING_KEY_FILE")
            elif self.mode != "demo" and self.key_wrapping_key is not None and \
                    is_placeholder(self.key_wrapping_key.get_secret_value()):
                problems.append("key_wrapping_key still has a placeholder value: set BRIDGE_KEY_WRAPPING_KEY to a "
                                "real secret (placeholders are accepted only with BRIDGE_MODE=demo)")
        return problems

    def key_bytes(self, name: Literal["data_encryption_key", "blind_index_key", "link_signing_key",
                                      "portal_pseudonym_key"]) -> bytes:
        return decode_key(getattr(self, name).get_secret_value())

    def previous_data_keys(self) -> list[bytes]:
        return [decode_key(key.get_secret_value()) for key in self.data_encryption_keys_previous]

    def previous_index_keys(self) -> list[bytes]:
        return [decode_key(key.get_secret_value()) for key in self.blind_index_keys_previous]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
