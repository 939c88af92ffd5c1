"""How the bridge authenticates to the EHR's FHIR API: none, HTTP Basic, or a static bearer token.

R4 leaves authentication to the server (https://hl7.org/fhir/R4/security.html#http); these are
the schemes hospital integration engines offer for system-to-system access. SMART Backend
Services (client-credentials JWT) is the :class:`FhirAuth` subclass in :mod:`ehr.smart`.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from typing import Literal, Protocol

import httpx
from pydantic import SecretStr

AuthScheme = Literal["none", "basic", "bearer", "smart"]


class FhirAuth(httpx.Auth):
    """An ``httpx.Auth`` that sets one fixed ``Authorization`` header (or none).

    The header value is built once; ``repr`` never shows it, so logging the object is safe.
    """

    def __init__(self, scheme: AuthScheme, header_value: str | None) -> None:
        self.scheme: AuthScheme = scheme
        self._header_value = header_value

    @classmethod
    def none(cls) -> FhirAuth:
        return cls("none", None)

    @classmethod
    def basic(cls, username: str, password: str) -> FhirAuth:
        if not username or ":" in username:
            # RFC 7617: the user-id cannot contain a colon, and an empty one is a setup mistake.
            raise ValueError("basic auth needs a user name without ':'")
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return cls("basic", f"Basic {token}")

    @classmethod
    def bearer(cls, token: str) -> FhirAuth:
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("bearer auth needs a token without spaces")
        return cls("bearer", f"Bearer {token}")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header_value is not None:
            request.headers["Authorization"] = self._header_value
        yield request

    def __repr__(self) -> str:
        return f"FhirAuth(scheme={self.scheme!r})"


class FhirAuthSettings(Protocol):
    """The part of ``adapter.settings.Settings`` this module reads (kept structural so that
    ``ehr`` does not import the composition root)."""

    @property
    def fhir_auth(self) -> str: ...
    @property
    def fhir_username(self) -> str | None: ...
    @property
    def fhir_password(self) -> SecretStr | None: ...
    @property
    def fhir_bearer_token(self) -> SecretStr | None: ...


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
        from ehr.smart_settings import smart_auth_from_settings  # imports this module: import late

        return smart_auth_from_settings(settings)
    raise ValueError(f"unknown fhir_auth scheme {settings.fhir_auth!r} (use none, basic, bearer or smart)")
