"""The service's settings: one typed object, read from ``BRIDGE_*`` environment variables and an
optional YAML file (``BRIDGE_SETTINGS_FILE``), validated at start-up.

Environment variables win over the file. Every problem is reported at once, in words a hospital
administrator can act on (see :func:`load_settings`). Outside ``mode=demo`` placeholder secrets are
refused, following fastapi/full-stack-fastapi-template's "changethis" check.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "BRIDGE_"
SETTINGS_FILE_ENV = "BRIDGE_SETTINGS_FILE"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAPPINGS_DIR = PACKAGE_ROOT / "mappings" / "rules"
DEFAULT_CONVERSATION_FILE = PACKAGE_ROOT / "mappings" / "conversation.yaml"
MAX_LINK_TTL_HOURS = 7 * 24
# SMART Backend Services: v1 (system/Patient.read) and v2 (system/Patient.rs, with an optional ?query) scopes.
SMART_SCOPE_RE = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|(?=[cruds])c?r?u?d?s?)(\?\S+)?$")
SMART_DEFAULT_SCOPE = ("system/Appointment.rus system/AppointmentResponse.crs system/Patient.rs system/Slot.rs "
                       "system/DiagnosticReport.rs system/Encounter.rs system/Task.crus "
                       "system/QuestionnaireResponse.c system/Subscription.cruds")

# Values shipped for the demo. They are public, so they must never protect real data.
DEMO_SECRET = "demo-only-not-a-secret"  # noqa: S105 - public on purpose, refused outside demo
DEMO_KEY = base64.urlsafe_b64encode(b"demo-only-key-not-secret-32bytes").decode()
DEMO_INDEX_KEY = base64.urlsafe_b64encode(b"demo-only-index-key-not-secret!!").decode()
_PLACEHOLDER_PREFIXES = ("demo-", "change", "placeholder", "secret", "xxx", "todo")


class SettingsError(Exception):
    """Settings are missing or wrong; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The service cannot start; fix these settings:\n  - " + "\n  - ".join(problems))


def _is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return not lowered or lowered.startswith(_PLACEHOLDER_PREFIXES) or value in (DEMO_SECRET, DEMO_KEY, DEMO_INDEX_KEY)


def _decode_key(value: str) -> bytes:
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be 32 random bytes in URL-safe base64 (`bridge keys-new` makes one)") from exc


class Settings(BaseSettings):
    """All settings. Each field's description is what the README documents."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    mode: Literal["production", "demo"] = Field(
        "production", description="`demo` accepts the shipped placeholder secrets; `production` refuses them."
    )
    # --- the service itself
    public_base_url: str = Field(
        "http://127.0.0.1:8000", description="Where the EHR and Meta reach this service (scheme, host, port)."
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    database_url: str = Field(
        "sqlite:///./bridge.db", description="SQLAlchemy URL: a SQLite file, or postgresql+psycopg://…"
    )
    data_encryption_key: SecretStr = Field(
        SecretStr(DEMO_KEY), description="32-byte URL-safe base64 key that encrypts phone numbers at rest."
    )
    blind_index_key: SecretStr = Field(
        SecretStr(DEMO_INDEX_KEY), description="32-byte key of the blind indexes that find encrypted numbers "
        "(must differ from the data key)."
    )
    data_encryption_keys_previous: list[SecretStr] = Field(
        default_factory=list, description="Earlier data keys, still decrypting until `bridge keys reencrypt` has run."
    )
    blind_index_keys_previous: list[SecretStr] = Field(
        default_factory=list, description="Earlier index keys, still used for lookups until `bridge keys reindex` "
        "has run."
    )
    keyring_file: Path | None = Field(
        None, description="Keyring file (JSON, mode 0600, outside the database) of wrapped data and index keys; "
        "when set, it replaces the two key settings above."
    )
    key_wrapping_key: SecretStr | None = Field(
        None, description="32-byte key-encryption key that unwraps the keyring file's keys."
    )
    key_wrapping_key_file: Path | None = Field(
        None, description="File (mode 0600) holding the key-encryption key instead of BRIDGE_KEY_WRAPPING_KEY."
    )
    # --- the EHR
    fhir_base_url: str = Field("http://127.0.0.1:8090/fhir", description="The EHR's FHIR R4 base URL.")
    fhir_auth: Literal["none", "basic", "bearer", "smart"] = Field(
        "none", description="How to authenticate to the EHR.")
    fhir_username: str | None = Field(None, description="User for `fhir_auth=basic`.")
    fhir_password: SecretStr | None = Field(None, description="Password for `fhir_auth=basic`.")
    fhir_bearer_token: SecretStr | None = Field(None, description="Token for `fhir_auth=bearer`.")
    # --- SMART backend services
    fhir_smart_client_id: str | None = Field(
        None, description="Client id the EHR registered for this service (`fhir_auth=smart`).")
    fhir_smart_private_key_file: Path | None = Field(
        None, description="PEM private key (RSA for RS384 or EC P-384 for ES384, mode 0600) that signs the client "
        "assertion; `bridge smart keygen` makes one and prints the public JWKS to register.")
    fhir_smart_key_id: str | None = Field(
        None, description="`kid` of that key as registered at the EHR; default: its RFC 7638 thumbprint, as "
        "`bridge smart keygen` prints it.")
    fhir_smart_scope: str = Field(
        SMART_DEFAULT_SCOPE, description="Space-separated SMART `system/` scopes the service asks the EHR for.")
    fhir_smart_token_url: str | None = Field(
        None, description="Token endpoint used when the EHR publishes no `.well-known/smart-configuration`.")

    @field_validator("fhir_smart_scope")
    @classmethod
    def _smart_scopes(cls, value: str) -> str:
        scopes = value.split()
        if not scopes:
            raise ValueError("name at least one scope, e.g. system/Appointment.rs")
        for scope in scopes:
            if not SMART_SCOPE_RE.match(scope):
                raise ValueError(f"{scope!r} is not a SMART system scope such as system/Appointment.rs or "
                                 "system/Patient.read")
        return " ".join(scopes)

    @field_validator("fhir_smart_token_url")
    @classmethod
    def _smart_token_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://ehr.example.org/oauth2/token")
        return value
    fhir_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of each call to the EHR.")
    ehr_hook_secret: SecretStr = Field(
        SecretStr(DEMO_SECRET),
        description="Master secret from which each Subscription's notification header secret is derived.",
    )
    manage_subscriptions: bool = Field(
        True, description="Create or verify the EHR Subscriptions at start-up (`bridge subscriptions ensure`)."
    )
    max_notification_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest notification body accepted from the EHR."
    )
    # --- Event feeds
    feed_mode: Literal["subscriptions", "polling", "both"] = Field(
        "subscriptions", description="How EHR changes arrive: `subscriptions` (the EHR notifies), `polling` (the "
        "bridge searches `_lastUpdated` every poll interval; for EHRs without usable Subscriptions) or `both` "
        "(Subscriptions plus a polling reconcile that catches what a rest-hook failed to deliver).")
    poll_interval_seconds: float = Field(
        60.0, ge=5, le=86400, description="Seconds between two polls of the EHR (`feed_mode` `polling` or `both`).")
    poll_safety_lag_seconds: float = Field(
        120.0, ge=0, le=86400, description="How far behind the newest EHR timestamp seen each poll looks again, "
        "so changes the EHR commits late (with an older timestamp) are not missed.")
    poll_page_size: int = Field(
        100, ge=10, le=1000, description="`_count` of each polling search page (every page is followed).")
    feed_check_interval_seconds: float = Field(
        300.0, ge=30, le=86400, description="Seconds between two subscription manager runs: re-creates, "
        "re-activates or deletes EHR Subscriptions to match the configuration and refreshes feed health.")
    # --- Backport subscriptions
    backport_topics: dict[str, str] = Field(
        default_factory=dict, description="Topic-based (Subscriptions Backport IG) feeds: resource type -> the "
        "topic's canonical URL as the EHR advertises it, e.g. {\"Appointment\": \"http://sekmet.dev/fhir/"
        "SubscriptionTopic/appointment-booked\"}; empty: no Backport Subscriptions.")
    backport_payload: Literal["empty", "id-only", "full-resource"] = Field(
        "id-only", description="What the EHR puts in each Backport notification: `empty`, `id-only` or "
        "`full-resource` (the bridge re-reads the resource in every case).")
    backport_heartbeat_seconds: int = Field(
        60, ge=1, le=86400, description="Heartbeat period asked of the EHR; no notification for twice this long "
        "makes the bridge ask the EHR for the Subscription's `$status`.")
    backport_timeout_seconds: int = Field(
        30, ge=1, le=600, description="How long the EHR should wait for the bridge to answer a notification.")
    backport_max_count: int = Field(
        20, ge=1, le=1000, description="Most events the EHR should put in one notification.")
    backport_gap_detection: Literal["events-since-start", "per-bundle", "off"] = Field(
        "events-since-start", description="How the EHR numbers Backport events: `events-since-start` (per event, "
        "as the IG says), `per-bundle` (the counter counts notifications) or `off` (no gap detection; the "
        "heartbeat/`$status` re-sync still runs).")
    backport_gap_grace_seconds: float = Field(
        30.0, ge=0, le=3600, description="How long a gap in event numbers may wait for late notifications before "
        "the bridge recovers the missed events.")
    backport_resync_margin_seconds: float = Field(
        60.0, ge=0, le=86400, description="How far before the last moment the feed was complete a recovery "
        "search starts (clock differences, late commits).")
    # --- WhatsApp Cloud API
    whatsapp_api_base_url: str = Field(
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
    undeliverable_hook_url: str | None = Field(
        None, description="Optional URL that gets a POST (ids only, no PHI) for each undeliverable message."
    )
    # --- portal links
    portal_base_url: str = Field(
        "http://127.0.0.1:8000/portal-demo", description="The hospital's authenticated patient portal."
    )
    link_signing_key: SecretStr = Field(SecretStr(DEMO_KEY), description="32-byte key that signs link tokens.")
    link_ttl_hours: int = Field(72, ge=1, le=MAX_LINK_TTL_HOURS, description="How long a portal link works.")
    link_signing_keys_previous: list[SecretStr] = Field(
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
    portal_pseudonym_key: SecretStr | None = Field(
        None, description="Key shared with the portal that turns a patient reference into the portal's pseudonym."
    )
    # --- patients and sites
    default_phone_region: str = Field("US", description="Region for phone numbers written without +country.")
    site_timezone: str = Field("America/New_York", description="IANA time zone of the site.")
    site_label_default: str = Field("Main Campus", description="Public site label used in messages.")
    site_labels: dict[str, str] = Field(
        default_factory=dict, description="Public labels by Location reference, e.g. {'Location/12': 'North'}."
    )
    default_language: str = Field("en_US", description="Template language when the patient's has none.")
    phi_profile: Literal["default", "strict"] = Field(
        "default", description="`strict` drops even date, time and site from messages."
    )
    consent_source: Literal["registry", "assume"] = Field(
        "registry", description="Where opt-in comes from: the local registry, or `assume` (demo only)."
    )
    report_policy: Literal["once", "every_release"] = Field(
        "once", description="Results-ready once per report, or again after amended/corrected/appended."
    )
    mappings_dir: Path = Field(DEFAULT_MAPPINGS_DIR, description="Folder of mapping rule files.")
    # --- conversations and write-back
    conversation_file: Path = Field(
        DEFAULT_CONVERSATION_FILE, description="Keywords (STOP, staff, emergency words) and reply texts per language."
    )
    confirm_mode: Literal["participant", "appointment_response"] = Field(
        "participant", description="How a Confirm tap is written: the patient participant's status, or an "
        "AppointmentResponse (EHRs differ)."
    )
    reschedule_window_days: int = Field(14, ge=1, le=180, description="How far ahead free slots are offered.")
    free_slot_on_cancel: bool = Field(
        True, description="Set the Slot free when a patient cancels (for EHRs that expect the client to)."
    )
    handoff_timeout_hours: float = Field(
        24.0, gt=0, le=24 * 14, description="How long the bot stays silent after a hand-off if the Task stays open."
    )
    staff_hours: str = Field(
        "08:00-17:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$",
        description="Front-desk opening hours in the site's time zone (HH:MM-HH:MM), told to patients.",
    )
    staff_workdays: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], description="Front-desk working days, 0 = Monday … 6 = Sunday."
    )
    staff_inbox_url: str | None = Field(
        None, description="Optional URL that gets a POST (ids only) for each hand-off, e.g. a staff inbox."
    )
    # --- Reminders and survey
    quiet_hours: str | None = Field(
        "21:00-08:00", description="Local hours (site_timezone) when no reminder starts, `HH:MM-HH:MM`; a reminder "
        "due then goes out earlier, at the start of the quiet hours. Empty: no quiet hours.",
    )
    remind_after_confirm: bool = Field(
        False, description="Keep sending reminders after the patient confirmed the appointment."
    )
    reminder_daily_cap: int = Field(
        2, ge=1, le=10, description="Most reminder messages one patient gets on one local day; the rest are skipped "
        "and listed as skips.",
    )
    survey_enabled: bool = Field(
        True, description="Ask a 1-5 satisfaction question once after an appointment is fulfilled, and write the "
        "answer to the EHR as a QuestionnaireResponse.",
    )

    @field_validator("backport_topics")
    @classmethod
    def _backport_topics(cls, value: dict[str, str]) -> dict[str, str]:
        for resource_type, topic in value.items():
            if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type):
                raise ValueError(f"backport_topics: '{resource_type[:40]}' is not a FHIR resource type such as "
                                 "Appointment")
            if not topic.startswith(("http://", "https://", "urn:")) or "?" in topic or " " in topic:
                raise ValueError(f"backport_topics: the topic for {resource_type} must be the canonical URL the "
                                 "EHR advertises (http(s)://... without a query), as listed by the EHR's "
                                 "SubscriptionTopic resources")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from adapter.scheduling.reminders import QuietHours  # late: the reminders module loads the storage models

        QuietHours.parse(value)  # its QuietHoursError (a ValueError) says what a valid value looks like
        return value.strip()

    # --- delivery
    dispatch_max_attempts: int = Field(8, ge=1, le=50, description="Send attempts before a dead letter.")
    dispatch_backoff_seconds: float = Field(2.0, gt=0, description="First retry delay; doubles, with jitter.")
    dispatch_backoff_max_seconds: float = Field(900.0, gt=0, description="Longest retry delay.")
    dispatch_batch_size: int = Field(200, ge=1, le=5000, description="Outbox rows claimed per tick.")
    tick_seconds: float = Field(1.0, gt=0, le=60, description="How often the pipeline looks for due work.")
    # --- Instances
    instance_count: int = Field(
        1, ge=1, le=64, description="How many service instances share the database and the WhatsApp number (PostgreSQL "
        "only); each sends at most whatsapp_messages_per_second / instance_count.",
    )
    inbox_lease_seconds: float = Field(
        300.0, ge=1, le=3600, description="How long an instance holds a claimed EHR event; if it dies, another "
        "instance takes the event over after this time.",
    )
    send_lease_seconds: float = Field(
        120.0, ge=1, le=3600, description="How long an instance holds a message it is sending; if it dies mid-send, "
        "another instance retries after this time (a status already received prevents a second send).",
    )
    # --- audit trail and retention
    audit_signing_key_file: Path | None = Field(
        None, description="Ed25519 private key (PEM, `bridge audit keygen`) that signs audit checkpoints; kept outside "
        "the database. Demo mode without it signs with a throwaway key.",
    )
    audit_checkpoint_every: int = Field(
        1000, ge=1, le=1_000_000, description="Audit records between two signed checkpoints."
    )
    audit_checkpoint_seconds: float = Field(
        300.0, gt=0, le=86400, description="Longest time between two signed checkpoints while records arrive."
    )
    audit_checkpoint_export_dir: Path | None = Field(
        None, description="Directory (write-once storage, a SIEM's drop folder) that gets each signed checkpoint "
        "as a line of JSON.",
    )
    audit_push_to_ehr: bool = Field(
        False, description="Also POST each audit record to the EHR's FHIR server as a BALP AuditEvent."
    )
    api_session_minutes: int = Field(
        15, ge=1, le=720, description="How long an auditor/admin API session lasts after logging in."
    )
    retention_link_days: int = Field(
        30, ge=1, le=3650, description="Days after a portal link expires before its rows are deleted."
    )
    retention_message_days: int = Field(
        90, ge=7, le=3650, description="Days after which a sent message's payload details are deleted."
    )
    retention_audit_years: int = Field(
        6, ge=6, le=100, description="Years audit records are kept (HIPAA: 6 at least); legal holds keep them longer."
    )
    audit_maintenance_database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL of the owner/maintenance role, used only by `bridge audit purge` and "
        "`bridge audit grant-app-role` (the application's role cannot delete audit records).",
    )
    retention_batch_size: int = Field(
        500, ge=1, le=50_000, description="Rows deleted per transaction by a retention purge."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a known IANA time zone (e.g. Europe/Madrid)") from exc
        return value

    @field_validator("default_phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a two-letter region code (e.g. US, ES, GB)")
        return value.upper()

    @field_validator("public_base_url", "fhir_base_url", "whatsapp_api_base_url", "portal_base_url",
                     "undeliverable_hook_url", "staff_inbox_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("data_encryption_key", "link_signing_key", "portal_pseudonym_key", "blind_index_key",
                     "key_wrapping_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(_decode_key(value.get_secret_value())) != 32:
            raise ValueError("must decode to exactly 32 bytes (`bridge keys-new` makes one)")
        return value

    @field_validator("link_signing_keys_previous", "data_encryption_keys_previous", "blind_index_keys_previous")
    @classmethod
    def _previous_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            if len(_decode_key(key.get_secret_value())) != 32:
                raise ValueError("each previous key must decode to exactly 32 bytes")
        return value

    @field_validator("staff_workdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(day not in range(7) for day in value):
            raise ValueError("must list days 0 (Monday) to 6 (Sunday), e.g. [0, 1, 2, 3, 4]")
        return sorted(set(value))

    @field_validator("site_labels")
    @classmethod
    def _labels_are_references(cls, value: dict[str, str]) -> dict[str, str]:
        for ref in value:
            if not ref.startswith("Location/"):
                raise ValueError(f"key {ref!r} must be a Location reference such as 'Location/12'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        problems: list[str] = []
        if self.fhir_auth == "basic" and not (self.fhir_username and self.fhir_password):
            problems.append("fhir_auth=basic needs BRIDGE_FHIR_USERNAME and BRIDGE_FHIR_PASSWORD")
        if self.fhir_auth == "bearer" and not self.fhir_bearer_token:
            problems.append("fhir_auth=bearer needs BRIDGE_FHIR_BEARER_TOKEN")
        if self.fhir_auth == "smart" and not (self.fhir_smart_client_id and self.fhir_smart_private_key_file):
            problems.append("fhir_auth=smart needs BRIDGE_FHIR_SMART_CLIENT_ID and BRIDGE_FHIR_SMART_PRIVATE_KEY_FILE "
                            "(`bridge smart keygen --out PATH` makes the key and prints what to register at the EHR)")
        elif self.fhir_auth == "smart" and self.fhir_smart_private_key_file and \
                not self.fhir_smart_private_key_file.is_file():
            problems.append(f"fhir_smart_private_key_file: {self.fhir_smart_private_key_file} is not a file")
        elif self.fhir_auth == "smart" and self.fhir_smart_private_key_file:
            from ehr.smart_keys import SmartKeyError, load_signing_key

            try:
                load_signing_key(self.fhir_smart_private_key_file)
            except SmartKeyError as error:
                problems.append(f"fhir_smart_private_key_file: {error}")
        problems.extend(self._key_problems())
        if self.send_lease_seconds < 2 * self.whatsapp_timeout_seconds:
            problems.append(f"send_lease_seconds ({self.send_lease_seconds:g}) must be at least twice "
                            f"whatsapp_timeout_seconds ({self.whatsapp_timeout_seconds:g}): a send must end before "
                            "another instance may take the message over")
        if self.instance_count > 1 and self.database_url.startswith("sqlite"):
            problems.append(f"instance_count={self.instance_count} needs PostgreSQL: SQLite runs one instance; set "
                            "BRIDGE_DATABASE_URL=postgresql+psycopg://... to run several")
        if self.mode != "demo":
            previous = self.whatsapp_app_secret_previous
            if previous is not None and _is_placeholder(previous.get_secret_value()):
                problems.append("whatsapp_app_secret_previous has a placeholder value: set it to the old secret or "
                                "remove it")
            for name in ("whatsapp_access_token", "whatsapp_app_secret", "whatsapp_verify_token",
                         "ehr_hook_secret", "data_encryption_key", "blind_index_key", "link_signing_key"):
                if name in ("data_encryption_key", "blind_index_key") and self.keyring_file is not None:
                    continue  # the keyring file holds the keys; these two are not used
                if _is_placeholder(getattr(self, name).get_secret_value()):
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
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _key_problems(self) -> list[str]:
        problems = []
        if self.keyring_file is None and self.key_bytes("blind_index_key") == self.key_bytes("data_encryption_key"):
            problems.append("blind_index_key must differ from data_encryption_key (`bridge keys-new` makes one)")
        if self.keyring_file is not None:
            if self.key_wrapping_key is None and self.key_wrapping_key_file is None:
                problems.append("keyring_file needs BRIDGE_KEY_WRAPPING_KEY or BRIDGE_KEY_WRAPPING_KEY_FILE")
            elif self.mode != "demo" and self.key_wrapping_key is not None and \
                    _is_placeholder(self.key_wrapping_key.get_secret_value()):
                problems.append("key_wrapping_key still has a placeholder value: set BRIDGE_KEY_WRAPPING_KEY to a "
                                "real secret (placeholders are accepted only with BRIDGE_MODE=demo)")
        return problems

    def key_bytes(self, name: Literal["data_encryption_key", "blind_index_key", "link_signing_key",
                                      "portal_pseudonym_key"]) -> bytes:
        return _decode_key(getattr(self, name).get_secret_value())

    def previous_data_keys(self) -> list[bytes]:
        return [_decode_key(key.get_secret_value()) for key in self.data_encryption_keys_previous]

    def previous_index_keys(self) -> list[bytes]:
        return [_decode_key(key.get_secret_value()) for key in self.blind_index_keys_previous]

    def previous_link_keys(self) -> list[bytes]:
        return [_decode_key(key.get_secret_value()) for key in self.link_signing_keys_previous]

    def app_secrets(self) -> list[bytes]:
        """The webhook secrets accepted now: the current one, and the previous one during a rotation."""
        secrets = [self.whatsapp_app_secret.get_secret_value().encode()]
        if self.whatsapp_app_secret_previous is not None:
            secrets.append(self.whatsapp_app_secret_previous.get_secret_value().encode())
        return [secret for secret in secrets if secret]

    def staff_times(self) -> tuple[time, time]:
        opens, closes = self.staff_hours.split("-")
        return time.fromisoformat(opens), time.fromisoformat(closes)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.site_timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional YAML file named by ``BRIDGE_SETTINGS_FILE`` (keys without the prefix)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(SETTINGS_FILE_ENV)
        self._data: dict[str, Any] = {}
        if path:
            file = Path(path)
            if not file.is_file():
                raise SettingsError([f"{SETTINGS_FILE_ENV} points to {path}, which is not a file"])
            try:
                loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise SettingsError([f"{path} is not valid YAML: {exc}"]) from exc
            if not isinstance(loaded, dict):
                raise SettingsError([f"{path} must hold a mapping of setting names to values"])
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        return f"{location}: unknown setting (check the spelling against the README's settings table)"
    if not location:
        return message
    return f"{location} (env {ENV_PREFIX}{location.upper()}): {message}"


def load_settings(**overrides: Any) -> Settings:
    """Builds and validates the settings; raises :class:`SettingsError` listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_input=False, include_url=False):
            text = _describe(dict(error))
            problems.extend(part.strip() for part in text.split("\n") if part.strip())
        raise SettingsError(problems) from None


decode_key = _decode_key  # for key files read outside the settings (adapter.security.keys)
