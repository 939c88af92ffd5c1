"""How the bridge authenticates to the EHR's FHIR API: none, HTTP Basic, or a static bearer token.

R4 leaves authentication to the server (https://hl7.org/fhir/R4/security.html#http); these are
the schemes hospital integration engines offer for system-to-system access. SMART Backend
Services (client-credentials JWT) is the :class:`FhirAuth` subclass in :mod:`ehr.smart`;
:mod:`ehr.auth_settings` picks the scheme the service settings name.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from typing import Literal

import httpx

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
