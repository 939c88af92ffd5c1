"""The HTTP exchange under :class:`ehr.client.FhirClient`: one connection pool to one FHIR server.

Sends a request with the configured auth and timeout, maps a failure to a typed :mod:`ehr.errors`
exception (https://hl7.org/fhir/R4/http.html#summary lists the status codes), keeps links the
server returns on its own origin so credentials never travel to another host, and decodes an
answer into a resource dict of the expected type.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ehr.auth import FhirAuth
from ehr.errors import FhirError, FhirInvalidResponseError, FhirUnavailableError, error_for_response

FHIR_JSON = "application/fhir+json"
Resource = dict[str, Any]

logger = logging.getLogger(__name__)

# (operation, resource type, seconds, error: the HTTP status or error class, None on success): the port
# through which whoever runs the client (the service's metrics) learns of each call; no URL, no values.
CallObserver = Callable[[str, str | None, float, str | None], None]
_observers: list[CallObserver] = []


def observe_calls(observer: CallObserver) -> None:
    """Calls ``observer`` after every FHIR request of every client in this process (once per observer)."""
    if observer not in _observers:
        _observers.append(observer)


def _report(operation: str, resource_type: str | None, seconds: float, error: str | None) -> None:
    for observer in _observers:
        observer(operation, resource_type, seconds, error)


class FhirTransport:
    """Sends one FHIR request and returns the successful response, or raises a typed error.

    ``transport`` lets tests inject ``httpx.MockTransport``.
    """

    def __init__(
        self,
        base_url: str,
        auth: FhirAuth | None,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None,
        max_connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(httpx.URL(self.base_url))
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            auth=auth or FhirAuth.none(),
            timeout=httpx.Timeout(timeout_seconds),
            # httpx's API on aiohttp's transport: measured here at about 0.25 ms of CPU per request
            # against 1.6-1.9 ms with httpx's default transport (bench/pipeline_throughput.py notes).
            transport=transport or AiohttpTransport(limits=limits),
            limits=limits,
            headers={"Accept": FHIR_JSON, "User-Agent": "fhir-whatsapp-bridge"},
            # A redirect would carry our credentials to wherever it points; treat it as a setup error.
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(
        self,
        operation: str,
        resource_type: str | None,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """``method url`` relative to the base URL; ``operation`` and ``resource_type`` name the
        call in logs and errors, and to the observers of :func:`observe_calls`."""
        started = time.perf_counter()
        try:
            response = await self._send(operation, resource_type, method, url, started, params=params,
                                        content=content, headers=headers)
        except FhirError as error:
            _report(operation, resource_type, time.perf_counter() - started,
                    str(error.status_code) if error.status_code is not None else type(error).__name__)
            raise
        _report(operation, resource_type, time.perf_counter() - started, None)
        return response

    async def _send(
        self,
        operation: str,
        resource_type: str | None,
        method: str,
        url: str,
        started: float,
        *,
        params: list[tuple[str, str]] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        context: dict[str, Any] = {"operation": operation, "resource_type": resource_type}
        try:
            response = await self._http.request(
                method, url, params=None if params is None else httpx.QueryParams(tuple(params)),
                content=content, headers=headers,
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                # httpx-aiohttp maps a refused connection to ConnectTimeout; say what really happened.
                raise FhirUnavailableError("could not reach the FHIR server (ConnectError)", **context) from exc
            raise FhirUnavailableError("the FHIR server did not answer in time", **context) from exc
        except httpx.TransportError as exc:
            raise FhirUnavailableError(f"could not reach the FHIR server ({type(exc).__name__})",
                                       **context) from exc
        # Type, status and timing only: never the URL's query, which may hold search values.
        logger.debug("FHIR %s %s -> %s in %.0f ms", operation, resource_type or "-", response.status_code,
                     (time.perf_counter() - started) * 1000)
        if response.is_success:
            return response
        raise error_for_response(response, **context)

    def same_origin(self, url: str, resource_type: str | None) -> str:
        """``url`` (a link the server returned) if it may be followed with our credentials."""
        target = httpx.URL(url)
        if not target.is_absolute_url:
            return url
        if _origin(target) != self._origin:
            # Following it would send our credentials to another host (servers behind proxies
            # sometimes advertise internal host names); the base URL setting must match.
            raise FhirInvalidResponseError(
                "the server linked to another host than fhir_base_url; check that setting",
                operation="search", resource_type=resource_type,
            )
        return url


def decode_resource(response: httpx.Response, operation: str, expected_type: str) -> Resource:
    """The response body as a resource of ``expected_type``, or :class:`FhirInvalidResponseError`."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError) as exc:
        raise FhirInvalidResponseError("the answer is not JSON", operation=operation,
                                       resource_type=expected_type, status_code=response.status_code) from exc
    if not isinstance(body, dict) or body.get("resourceType") != expected_type:
        raise FhirInvalidResponseError(f"the answer is not a {expected_type}", operation=operation,
                                       resource_type=expected_type, status_code=response.status_code)
    return body


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default_port
