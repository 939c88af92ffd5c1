"""Settings of the connection to the EHR: its FHIR base URL, how the service authenticates (none, basic,
bearer, or SMART Backend Services, https://hl7.org/fhir/smart-app-launch/backend-services.html), and the
notifications it sends (the Subscriptions' header secret, the largest body accepted)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from adapter.settings.values import DEMO_SECRET, WebUrl

# SMART Backend Services: v1 (system/Patient.read) and v2 (system/Patient.rs, with an optional ?query) scopes.
SMART_SCOPE_RE = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|(?=[cruds])c?r?u?d?s?)(\?\S+)?$")
SMART_DEFAULT_SCOPE = ("system/Appointment.rus system/AppointmentResponse.crs system/Patient.rs system/Slot.rs "
                       "system/DiagnosticReport.rs system/DocumentReference.rs system/Invoice.rs system/Encounter.rs "
                       "system/Task.crus "
                       "system/QuestionnaireResponse.c system/Subscription.cruds")


class EhrSettings(BaseModel):
    # --- the EHR
    fhir_base_url: WebUrl = Field("http://127.0.0.1:8090/fhir", description="The EHR's FHIR R4 base URL.")
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
    fhir_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of each call to the EHR.")
    ehr_hook_secret: SecretStr = Field(
        SecretStr(DEMO_SECRET),
        description="Master secret from which each Subscription's notification header secret is derived.",
    )
    ehr_notify_auth: Literal["header", "medplum-signature"] = Field(
        "header", description="How the managed Subscriptions' notifications authenticate: `header` (an "
        "`Authorization` channel header, any EHR) or `medplum-signature` (Medplum's `X-Signature` HMAC of the body).")
    manage_subscriptions: bool = Field(
        True, description="Create or verify the EHR Subscriptions at start-up (`bridge subscriptions ensure`)."
    )
    max_notification_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest notification body accepted from the EHR."
    )

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

    def _auth_problems(self) -> list[str]:
        """What the chosen ``fhir_auth`` still lacks, checked once every field is valid."""
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
        return problems
