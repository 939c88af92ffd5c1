"""The service's settings as one typed object: every group of settings put together, read from ``BRIDGE_*``
environment variables and the optional YAML file, and the checks that span groups.

Those checks run once every field is valid (a model validator): leases that must outlast a send, several
instances only on PostgreSQL, and outside ``mode=demo`` no placeholder secret, no assumed opt-in and a
signed audit trail, following fastapi/full-stack-fastapi-template's "changethis" check.
"""

from __future__ import annotations

from pydantic import model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapter.settings.audit import AuditSettings
from adapter.settings.conversation import ConversationSettings
from adapter.settings.delivery import DeliverySettings
from adapter.settings.education import EducationSettings
from adapter.settings.ehr_connection import EhrSettings
from adapter.settings.feeds import FeedSettings
from adapter.settings.hl7 import Hl7Settings
from adapter.settings.portal import PortalSettings
from adapter.settings.service import ServiceSettings
from adapter.settings.site import SiteSettings
from adapter.settings.sources import ENV_PREFIX, YamlFileSource
from adapter.settings.values import is_placeholder
from adapter.settings.whatsapp_api import WhatsAppSettings

_PRODUCTION_SECRETS = ("whatsapp_access_token", "whatsapp_app_secret", "whatsapp_verify_token",
                       "ehr_hook_secret", "data_encryption_key", "blind_index_key", "link_signing_key")


# pydantic orders fields from the last base to the first: the groups are listed bottom-up so that the
# settings keep the README's order (validation messages and `bridge check-settings` follow it).
class Settings(BaseSettings, Hl7Settings, AuditSettings, DeliverySettings, EducationSettings, ConversationSettings,
               SiteSettings, PortalSettings, WhatsAppSettings, FeedSettings, EhrSettings, ServiceSettings):
    """All settings. Each field's description is what the README documents."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlFileSource(settings_cls))

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        problems = [*self._auth_problems(), *self._key_problems(), *self._instance_problems()]
        if self.mode != "demo":
            problems.extend(self._production_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _instance_problems(self) -> list[str]:
        problems = []
        if self.send_lease_seconds < 2 * self.whatsapp_timeout_seconds:
            problems.append(f"send_lease_seconds ({self.send_lease_seconds:g}) must be at least twice "
                            f"whatsapp_timeout_seconds ({self.whatsapp_timeout_seconds:g}): a send must end before "
                            "another instance may take the message over")
        if self.instance_dead_after_seconds < 3 * self.heartbeat_seconds:
            problems.append(f"instance_dead_after_seconds ({self.instance_dead_after_seconds:g}) must be at least "
                            f"three times heartbeat_seconds ({self.heartbeat_seconds:g}): a live instance that misses "
                            "one heartbeat must not be taken for dead")
        if self.whatsapp_timeout_seconds > self.instance_dead_after_seconds / 2 + self.in_doubt_grace_seconds:
            problems.append(f"whatsapp_timeout_seconds ({self.whatsapp_timeout_seconds:g}) must be at most half of "
                            f"instance_dead_after_seconds ({self.instance_dead_after_seconds:g}) plus "
                            f"in_doubt_grace_seconds ({self.in_doubt_grace_seconds:g}): a send must end before another "
                            "instance may take its message over")
        if self.instance_count > 1 and self.database_url.startswith("sqlite"):
            problems.append(f"instance_count={self.instance_count} needs PostgreSQL: SQLite runs one instance; set "
                            "BRIDGE_DATABASE_URL=postgresql+psycopg://... to run several")
        return problems

    def _production_problems(self) -> list[str]:
        problems = []
        previous = self.whatsapp_app_secret_previous
        if previous is not None and is_placeholder(previous.get_secret_value()):
            problems.append("whatsapp_app_secret_previous has a placeholder value: set it to the old secret or "
                            "remove it")
        for name in _PRODUCTION_SECRETS:
            if name in ("data_encryption_key", "blind_index_key") and self.keyring_file is not None:
                continue  # the keyring file holds the keys; these two are not used
            if is_placeholder(getattr(self, name).get_secret_value()):
                problems.append(
                    f"{name} still has a placeholder value: set BRIDGE_{name.upper()} to a real secret "
                    "(placeholders are accepted only with BRIDGE_MODE=demo)"
                )
        if self.consent_source == "assume":
            problems.append("consent_source=assume is for demos only; use `registry` in production")
        if self.audit_signing_key_file is None:
            problems.append("audit_signing_key_file is not set: audit checkpoints must be signed with a key kept "
                            "outside the database (`bridge audit keygen --out /secure/path/audit-signing.pem`)")
        elif not self.audit_signing_key_file.is_file():
            problems.append(f"audit_signing_key_file: {self.audit_signing_key_file} is not a file "
                            "(`bridge audit keygen --out ...` makes one)")
        return problems
