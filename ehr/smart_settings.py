"""Builds :class:`ehr.smart.SmartBackendAuth` from the service settings (``fhir_auth = "smart"``).

The settings are read structurally (:class:`SmartAuthSettings`) so that ``ehr`` does not import the
composition root. See https://hl7.org/fhir/smart-app-launch/backend-services.html for what each
value is registered as at the EHR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from ehr.smart import SmartBackendAuth, SmartTokenSource
from ehr.smart_keys import load_signing_key


@runtime_checkable
class SmartAuthSettings(Protocol):
    """The part of ``adapter.settings.Settings`` SMART Backend Services reads."""

    @property
    def fhir_base_url(self) -> str: ...
    @property
    def fhir_timeout_seconds(self) -> float: ...
    @property
    def fhir_smart_client_id(self) -> str | None: ...
    @property
    def fhir_smart_private_key_file(self) -> Path | None: ...
    @property
    def fhir_smart_key_id(self) -> str | None: ...
    @property
    def fhir_smart_scope(self) -> str: ...
    @property
    def fhir_smart_token_url(self) -> str | None: ...


def smart_token_source(settings: object) -> SmartTokenSource:
    """The token source the settings describe; loads (and checks) the private key now.

    Raises ``ValueError`` (:class:`ehr.smart_keys.SmartKeyError` for key problems) with a message
    naming the setting to fix.
    """
    if not isinstance(settings, SmartAuthSettings):
        raise ValueError("fhir_auth=smart needs the fhir_smart_* settings")
    if not settings.fhir_smart_client_id or settings.fhir_smart_private_key_file is None:
        raise ValueError("fhir_auth=smart needs fhir_smart_client_id and fhir_smart_private_key_file")
    key = load_signing_key(settings.fhir_smart_private_key_file, settings.fhir_smart_key_id)
    return SmartTokenSource(settings.fhir_base_url, settings.fhir_smart_client_id, key, settings.fhir_smart_scope,
                            token_url=settings.fhir_smart_token_url,
                            timeout_seconds=settings.fhir_timeout_seconds)


def smart_auth_from_settings(settings: object) -> SmartBackendAuth:
    """The ``FhirAuth`` for ``fhir_auth=smart`` (what :func:`ehr.auth.auth_from_settings` returns)."""
    return SmartBackendAuth(smart_token_source(settings))
