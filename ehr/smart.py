"""SMART Backend Services authorisation to the EHR: client credentials with a signed JWT assertion.

Implements https://hl7.org/fhir/smart-app-launch/backend-services.html, what Epic and Oracle
Health require for system-to-system access:

1. discover the token endpoint from ``[base]/.well-known/smart-configuration``
   (https://hl7.org/fhir/smart-app-launch/conformance.html), falling back to a configured URL;
2. sign a client assertion (``iss`` = ``sub`` = client id, ``aud`` = token URL, ``exp`` within five
   minutes, a unique ``jti``, ``kid`` header) with RS384 or ES384 (#authenticating-to-the-token-endpoint);
3. POST ``grant_type=client_credentials`` with the scope and the assertion (#obtaining-an-access-token);
4. send ``Authorization: Bearer`` on every FHIR request, refreshing the cached token shortly before
   ``expires_in`` runs out, and once more when the FHIR server answers 401.

:class:`SmartBackendAuth` is an ``httpx.Auth`` (the seam :class:`ehr.transport.FhirTransport` applies
auth at); a lock makes concurrent requests share one token request. Neither the assertion nor the
token ever reaches a log line, an exception message or a ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from ehr.auth import FhirAuth
from ehr.errors import FhirAuthError, FhirUnavailableError
from ehr.smart_keys import SigningKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The spec allows at most five minutes; a minute less leaves room for clock skew with the EHR.
ASSERTION_LIFETIME_SECONDS = 240
DEFAULT_EXPIRES_IN = 300  # the spec's recommended lifetime, assumed when a server omits expires_in
MAX_REFRESH_MARGIN_SECONDS = 60.0

logger = logging.getLogger(__name__)


class SmartAuthError(FhirAuthError):
    """The EHR refused to issue a token, or is not set up for SMART Backend Services.

    ``error`` is the OAuth 2.0 error code the token endpoint returned (RFC 6749 section 5.2:
    ``invalid_client``, ``invalid_scope``, ...), or ``discovery_failed`` / ``invalid_token_response``
    when the failure is ours to describe. ``description`` is the server's ``error_description``,
    shortened; neither ever holds the assertion or a token.
    """

    def __init__(self, message: str, *, error: str, description: str | None = None,
                 status_code: int | None = None) -> None:
        self.error = error
        self.description = description
        detail = f" ({description})" if description else ""
        super().__init__(f"{message}: {error}{detail}", operation="token", status_code=status_code)


class SmartTokenUnavailableError(FhirUnavailableError):
    """The token endpoint could not be reached or answered 429/5xx; retry later."""


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A bearer token with what the server granted. ``expires_at`` is on the source's clock."""

    value: str = field(repr=False)
    scopes: tuple[str, ...]
    expires_in: float
    expires_at: float
    expires_at_epoch: float

    def __repr__(self) -> str:
        return f"AccessToken(scopes={self.scopes!r}, expires_in={self.expires_in!r})"


class SmartTokenSource:
    """Obtains and caches access tokens for one client at one EHR.

    ``clock`` (monotonic seconds) decides when a cached token is due for refresh; tests pass their
    own. ``transport`` is for the token and discovery requests only. ``tokens_fetched`` counts token
    requests that succeeded (a health figure).
    """

    def __init__(self, fhir_base_url: str, client_id: str, key: SigningKey, scope: str, *,
                 token_url: str | None = None, timeout_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not client_id:
            raise ValueError("SMART Backend Services needs a client id")
        if not scope.split():
            raise ValueError("SMART Backend Services needs at least one scope")
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.client_id = client_id
        self.key = key
        self.scope = " ".join(scope.split())
        self._fallback_token_url = token_url
        self._token_url: str | None = None
        self._timeout = httpx.Timeout(timeout_seconds)
        self._clock = clock
        self._transport = transport
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"SmartTokenSource(client_id={self.client_id!r}, alg={self.key.alg!r}, kid={self.key.kid!r})"

    async def token(self) -> AccessToken:
        """The cached token while it is fresh, else a new one (one request however many callers wait)."""
        current = self._token
        if current is not None and self._fresh(current):
            return current
        return await self.refresh(current)

    async def refresh(self, stale: AccessToken | None) -> AccessToken:
        """A new token unless another caller already replaced ``stale`` with a fresh one."""
        async with self._lock:
            current = self._token
            if current is not None and current is not stale and self._fresh(current):
                return current
            self._token = None
            self._token = await self._fetch()
            return self._token

    def forget(self) -> None:
        """Drops the cached token (the next request fetches a new one)."""
        self._token = None

    async def token_endpoint(self) -> str:
        """The token URL from ``.well-known/smart-configuration``, else the configured fallback."""
        if self._token_url is None:
            self._token_url = await self._discover()
        return self._token_url

    def client_assertion(self, token_url: str) -> str:
        """A signed, single-use client assertion (#authenticating-to-the-token-endpoint)."""
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url, "iat": now,
                  "exp": now + ASSERTION_LIFETIME_SECONDS, "jti": secrets.token_urlsafe(24)}
        return jwt.encode(claims, self.key.private_key, algorithm=self.key.alg,
                          headers={"kid": self.key.kid, "typ": "JWT"})

    # --- plumbing -----------------------------------------------------------------------

    def _fresh(self, token: AccessToken) -> bool:
        margin = min(MAX_REFRESH_MARGIN_SECONDS, token.expires_in / 5)
        return self._clock() < token.expires_at - margin

    def _client(self) -> httpx.AsyncClient:
        # A redirect would carry the assertion elsewhere: treat one as a setup error.
        return httpx.AsyncClient(timeout=self._timeout, transport=self._transport, follow_redirects=False,
                                 headers={"Accept": "application/json", "User-Agent": "fhir-whatsapp-bridge"})

    async def _discover(self) -> str:
        url = f"{self.fhir_base_url}/.well-known/smart-configuration"
        config: Any = None
        try:
            async with self._client() as http:
                response = await http.get(url)
            problem = f"answered HTTP {response.status_code}"
            if response.status_code == 200:
                config, problem = response.json(), "has no token_endpoint"
        except httpx.HTTPError as exc:
            if self._fallback_token_url is None:
                raise SmartTokenUnavailableError(f"could not fetch the EHR's smart-configuration "
                                                 f"({type(exc).__name__})", operation="token") from exc
            problem = f"was unreachable ({type(exc).__name__})"
        except ValueError:
            problem = "is not JSON"
        if isinstance(config, dict) and isinstance(config.get("token_endpoint"), str):
            _check_capabilities(config, self.key.alg)
            return _checked_url(config["token_endpoint"], "the smart-configuration's token_endpoint")
        if self._fallback_token_url is not None:
            logger.info("SMART: the EHR's smart-configuration %s; using fhir_smart_token_url", problem)
            return _checked_url(self._fallback_token_url, "fhir_smart_token_url")
        raise SmartAuthError("the EHR publishes no usable .well-known/smart-configuration; set "
                             "fhir_smart_token_url", error="discovery_failed", description=f"it {problem}")

    async def _fetch(self) -> AccessToken:
        token_url = await self.token_endpoint()
        form = {"grant_type": "client_credentials", "scope": self.scope, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(token_url)}
        started, started_epoch = self._clock(), time.time()
        try:
            async with self._client() as http:
                response = await http.post(token_url, data=form)
        except httpx.HTTPError as exc:
            raise SmartTokenUnavailableError(f"could not reach the token endpoint ({type(exc).__name__})",
                                             operation="token") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SmartTokenUnavailableError("the token endpoint is unavailable", operation="token",
                                             status_code=response.status_code)
        body = _json(response)
        if response.status_code != 200:
            raise SmartAuthError("the EHR refused the token request", error=_short(body.get("error")) or "unknown",
                                 description=_short(body.get("error_description")),
                                 status_code=response.status_code)
        token = _parse_token(body, response.status_code, started, started_epoch)
        self.tokens_fetched += 1
        logger.info("SMART token obtained from %s: expires in %.0f s, scopes %s",
                    urlsplit(token_url).netloc, token.expires_in, " ".join(token.scopes))
        return token


class SmartBackendAuth(FhirAuth):
    """``Authorization: Bearer`` from a :class:`SmartTokenSource`, with one retry after a 401.

    Async only (``FhirClient`` is async); a sync ``httpx.Client`` gets a clear error.
    """

    def __init__(self, source: SmartTokenSource) -> None:
        super().__init__("smart", None)
        self.source = source

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.source.token()
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == 401:
            # The EHR revoked or expired the token before we expected: fetch a new one, try once more.
            logger.info("SMART: the EHR answered 401; refreshing the access token once")
            token = await self.source.refresh(token)
            request.headers["Authorization"] = f"Bearer {token.value}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("SMART Backend Services auth works with the async FhirClient only")

    def __repr__(self) -> str:
        return f"SmartBackendAuth({self.source!r})"


def _check_capabilities(config: dict[str, Any], alg: str) -> None:
    methods = config.get("token_endpoint_auth_methods_supported")
    if isinstance(methods, list) and methods and "private_key_jwt" not in methods:
        raise SmartAuthError("the EHR does not accept signed client assertions", error="discovery_failed",
                             description="private_key_jwt is not in token_endpoint_auth_methods_supported")
    algs = config.get("token_endpoint_auth_signing_alg_values_supported")
    if isinstance(algs, list) and algs and alg not in algs:
        raise SmartAuthError(f"the EHR does not accept {alg} assertions", error="discovery_failed",
                             description=f"it supports {', '.join(str(a) for a in algs[:6])}")


def _checked_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SmartAuthError(f"{what} is not an http(s) URL", error="discovery_failed")
    return url


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _short(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _parse_token(body: dict[str, Any], status: int, started: float, started_epoch: float) -> AccessToken:
    value = body.get("access_token")
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise SmartAuthError("the token response has no usable access_token", error="invalid_token_response",
                             status_code=status)
    if str(body.get("token_type", "")).lower() != "bearer":
        raise SmartAuthError("the token response is not a bearer token", error="invalid_token_response",
                             status_code=status)
    raw = body.get("expires_in", DEFAULT_EXPIRES_IN)
    expires_in = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0 \
        else float(DEFAULT_EXPIRES_IN)
    scopes = tuple(str(body["scope"]).split()) if isinstance(body.get("scope"), str) else ()
    # Measured from before the request was sent, so the cache never outlives the server's view.
    return AccessToken(value, scopes, expires_in, started + expires_in, started_epoch + expires_in)
