"""Settings of the WhatsApp Cloud API (https://developers.facebook.com/docs/whatsapp/cloud-api): the Graph
API root and version, the sending number and its credentials, the webhook secrets (with one previous app
secret during a rotation), throughput and pacing, the fallback template and the undeliverable hook."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from adapter.settings.values import DEMO_SECRET, WebUrl


class WhatsAppSettings(BaseModel):
    # --- WhatsApp Cloud API
    whatsapp_api_base_url: WebUrl = Field(
        "https://graph.facebook.com", description="Graph API root: Meta, a BSP proxy, or the emulator."
    )
    whatsapp_api_version: str = Field("v23.0", pattern=r"^v\d+\.\d+$", description="Graph API version.")
    whatsapp_access_token: SecretStr = Field(SecretStr(DEMO_SECRET), description="System-user access token.")
    whatsapp_phone_number_id: str = Field("100000000000001", description="The sending phone number's id.")
    whatsapp_waba_id: str = Field("200000000000002", description="The WhatsApp Business Account id.")
    whatsapp_app_secret: SecretStr = Field(
        SecretStr(DEMO_SECRET), description="Meta app secret that signs webhooks (X-Hub-Signature-256)."
    )
    whatsapp_app_secret_previous: SecretStr | None = Field(
        None, description="The previous app secret, still accepted on webhooks while Meta rotates to the new one."
    )
    whatsapp_verify_token: SecretStr = Field(
        SecretStr(DEMO_SECRET), description="Token Meta echoes when verifying the webhook URL."
    )
    whatsapp_timeout_seconds: float = Field(10.0, gt=0, le=60, description="Timeout of each send.")
    whatsapp_max_connections: int = Field(64, ge=1, le=1000, description="Connections kept open to the API.")
    whatsapp_messages_per_second: int = Field(
        80, ge=1, le=1000, description="Throughput of the sending number (Meta: 80 by default, up to 1,000)."
    )
    whatsapp_pair_interval_seconds: float = Field(
        6.0, ge=1.0, le=3600, description="Least time between two messages to one patient (Meta's pair limit: 6 s)."
    )
    whatsapp_fallback_template: str | None = Field(
        "service_update",
        description="Parameter-less template sent when a message's own template is paused or not approved.",
    )
    whatsapp_sync_templates: bool = Field(
        True, description="Read the templates' review states from the WhatsApp Business Account at start-up."
    )
    undeliverable_hook_url: WebUrl | None = Field(
        None, description="Optional URL that gets a POST (ids only, no PHI) for each undeliverable message."
    )

    def app_secrets(self) -> list[bytes]:
        """The webhook secrets accepted now: the current one, and the previous one during a rotation."""
        secrets = [self.whatsapp_app_secret.get_secret_value().encode()]
        if self.whatsapp_app_secret_previous is not None:
            secrets.append(self.whatsapp_app_secret_previous.get_secret_value().encode())
        return [secret for secret in secrets if secret]
