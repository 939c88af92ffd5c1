"""Builds the :class:`ehr.auth.FhirAuth` the service settings name (``fhir_auth``: none, basic, bearer, smart).

The settings are read structurally (:class:`FhirAuthSettings`, :class:`SmartAuthSettings`) so that
``ehr`` does not import the composition root. For ``smart``, see
https://hl7.org/fhir/smart-app-launch/backend-services.html for what each ``fhir_smart_*`` value is
registered as at the EHR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from ehr.auth import FhirAuth
from ehr.smart import SmartBackendAuth, SmartTokenSource
from ehr.smart_keys import load_signing_key


class FhirAuthSettings(Protocol):
    """The part of ``adapter.settings.Settings`` every scheme reads."""

    @property
    def fhir_auth(self) -> str: ...
    @property
    def fhir_username(self) -> str | None: ...
    @property
    def fhir_password(self) -> SecretStr | None: ...
    @property
    def fhir_bearer_token(self) -> SecretStr | None: ...


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


def auth_from_settings(settings: FhirAuthSettings) -> FhirAuth:
    """Builds the :class:`FhirAuth` named by ``settings.fhir_auth``.

    Raises ``ValueError`` when the scheme's credentials are missing (the settings model already
    refuses that, this guards direct callers).
    """
    if settings.fhir_auth == "none":
        return FhirAuth.none()
    if settings.fhir_auth == "basic":
        if not settings.fhir_username or settings.fhir_password is None:
            raise ValueError("fhir_auth=basic needs fhir_username and fhir_password")
        return FhirAuth.basic(settings.fhir_username, settings.fhir_password.get_secret_value())
    if settings.fhir_auth == "bearer":
        if settings.fhir_bearer_token is None:
            raise ValueError("fhir_auth=bearer needs fhir_bearer_token")
        return FhirAuth.bearer(settings.fhir_bearer_token.get_secret_value())
    if settings.fhir_auth == "smart":
        return SmartBackendAuth(smart_token_source(settings))
    raise ValueError(f"unknown fhir_auth scheme {settings.fhir_auth!r} (use none, basic, bearer or smart)")


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
