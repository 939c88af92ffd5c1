"""The service's OpenAPI document (https://spec.openapis.org/oas/v3.1.0) as a client generator needs it, and
the interactive docs.

- Security schemes (OAS 3.1 section 4.8.27): ``apiKey`` (an API key, exchanged at ``POST /auth/login``),
  ``apiSession`` (the session token that login returns, on every ``/admin`` and ``/audit`` route), both sent
  as ``Authorization: Bearer``; ``ehrNotifySecret`` and ``medplumSignature`` on the EHR notification routes
  (:mod:`ehr.intake`). Routes name theirs with :data:`SESSION_SECURITY` or in their ``openapi_extra``.
- Error bodies are documented as :class:`ErrorDetail` / :class:`ValidationDetail` (FastAPI's
  ``{"detail": ...}``) with :func:`errors`; every operation has a description (a route with only a summary
  gets it as its description).
- ``/docs`` (Swagger UI) is served to anyone in demo mode; otherwise only with a live session of any role
  (:class:`adapter.security.access.AccessControl`: refusals are answered 401 and audited). The document
  itself, ``/openapi.json``, describes the surface and holds no data: it stays public, for generators.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from adapter.security.access import AccessControl
from adapter.security.roles import Principal, Role

SESSION_SCHEME = "apiSession"
SESSION_SECURITY: dict[str, Any] = {"security": [{SESSION_SCHEME: []}]}
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {"type": "http", "scheme": "bearer", "description":
               "An API key (`bridge credentials create`), sent only to `POST /auth/login`."},
    SESSION_SCHEME: {"type": "http", "scheme": "bearer", "description":
                     "The session token `POST /auth/login` returns; it expires after `api_session_minutes`."},
    "ehrNotifySecret": {"type": "http", "scheme": "bearer", "description":
                        "The per-subscription secret the EHR sends as its Subscription's channel header."},
    "medplumSignature": {"type": "apiKey", "in": "header", "name": "X-Signature", "description":
                         "Medplum: hex HMAC-SHA256 of the body keyed with the subscription-secret extension."},
}
DESCRIPTION = ("Connects a hospital's FHIR R4 EHR to WhatsApp. The EHR notifies `/ehr/notify/{key}`; Meta posts "
               "to `/whatsapp/webhook`; auditors and admins log in with an API key at `/auth/login` and send the "
               "returned session token as `Authorization: Bearer` to `/audit` and `/admin`.")


def api_version() -> str:
    """The installed package's version (the document's ``info.version``)."""
    try:
        return installed_version("fhir-whatsapp-bridge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


# Routes of other modules that declare neither a summary nor a docstring.
_DESCRIPTIONS = {("get", "/whatsapp/webhook"): "Meta's webhook verification: echoes `hub.challenge` when "
                 "`hub.mode` is `subscribe` and `hub.verify_token` matches; 403 otherwise."}


class ErrorDetail(BaseModel):
    """FastAPI's error body: what went wrong, without the input."""

    detail: str


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationDetail(BaseModel):
    """A body or parameter the model refused: one problem per field (never the input), or a sentence."""

    detail: list[Problem] | str


_ERROR_TEXT = {
    400: "The body is not JSON, or not a request of this kind",
    401: "No live session (or key): `WWW-Authenticate: Bearer`",
    403: "This session's role may not use this operation",
    404: "No such item",
    409: "Conflicts with what exists",
    413: "The body is over the size limit",
    422: "A field breaks a rule",
    429: "Too many failed logins from this address: `Retry-After`",
    502: "The EHR could not be read",
    503: "Temporarily unable, or not configured here",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of these error statuses, for a route decorator."""
    return {status: {"model": ValidationDetail if status == 422 else ErrorDetail,
                     "description": _ERROR_TEXT[status]} for status in statuses}


def session_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """:func:`errors` of a route behind a session: 401 and 403, then ``statuses``."""
    return errors(401, 403, *statuses)


def install_docs(app: FastAPI, access: AccessControl, *, public: bool) -> None:
    """Builds the document once with the schemes above, and serves ``/docs`` (for anyone when
    ``public``, else for a live session of any role). Call after every router is included."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in document.get("paths", {}).items():
                for method, operation in operations.items():
                    fallback = operation.get("summary") or _DESCRIPTIONS.get((method, path))
                    if not operation.get("description") and fallback:
                        operation["description"] = fallback
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    title = f"{app.title}: API"

    if public:
        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=title)
    else:
        anyone = access.require(*Role)

        @app.get("/docs", include_in_schema=False)
        async def docs_for_a_session(principal: Principal = Depends(anyone)) -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=title)
