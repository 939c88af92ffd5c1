"""An async client for the FHIR R4 RESTful API, kept light for the hot path.

Implements the interactions of https://hl7.org/fhir/R4/http.html that the bridge uses: read,
vread, search (following ``next`` links, https://hl7.org/fhir/R4/search.html#paging), create,
update and JSON patch (with ``If-Match`` for version-aware writes,
https://hl7.org/fhir/R4/http.html#concurrency), transaction, instance history, delete and
capabilities. Resources travel as plain dicts: no model validation on reads (it costs
~30x a ``json.loads``); validate what you write before calling :meth:`FhirClient.create`.

Every call has a timeout and raises a typed :mod:`ehr.errors` exception on failure; the HTTP
exchange itself (pool, auth, error mapping, same-origin links) is :mod:`ehr.transport`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from ehr.auth import FhirAuth
from ehr.errors import FhirInvalidResponseError, FhirPagingLimitError, FhirRequestError
from ehr.transport import FHIR_JSON, FhirTransport, Resource, decode_resource

JSON_PATCH = "application/json-patch+json"
DEFAULT_MAX_PAGES = 50
# https://hl7.org/fhir/R4/datatypes.html#id; checked so an id can never change the URL's path.
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@dataclass(frozen=True)
class SearchPage:
    """One page of a search: its resources (``outcome`` entries left out) and whether a ``next``
    page follows."""

    resources: list[Resource]
    more: bool


class FhirClient:
    """One connection pool to one FHIR server. Use as ``async with FhirClient(...) as fhir:``.

    ``transport`` lets tests inject ``httpx.MockTransport``; ``max_pages`` bounds how many
    search pages :meth:`search` follows before raising :class:`FhirPagingLimitError`.
    """

    def __init__(
        self,
        base_url: str,
        auth: FhirAuth | None = None,
        timeout_seconds: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_connections: int = 20,
    ) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        # Operations beyond the RESTful interactions (``$status``, ``$events``) send through it directly.
        self.transport = FhirTransport(base_url, auth, timeout_seconds, transport, max_connections)
        self.base_url = self.transport.base_url
        self.max_pages = max_pages

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- interactions -------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> Resource:
        """``GET [base]/[type]/[id]`` (https://hl7.org/fhir/R4/http.html#read)."""
        path = f"{_checked_type(resource_type, 'read')}/{_checked_id(resource_id, 'read')}"
        response = await self.transport.send("read", resource_type, "GET", path)
        return decode_resource(response, "read", resource_type)

    async def vread(self, resource_type: str, resource_id: str, version_id: str) -> Resource:
        """``GET [base]/[type]/[id]/_history/[vid]`` (https://hl7.org/fhir/R4/http.html#vread)."""
        path = (f"{_checked_type(resource_type, 'vread')}/{_checked_id(resource_id, 'vread')}"
                f"/_history/{_checked_id(version_id, 'vread')}")
        response = await self.transport.send("vread", resource_type, "GET", path)
        return decode_resource(response, "vread", resource_type)

    async def search(
        self, resource_type: str, params: Sequence[tuple[str, str]] = (), *, max_pages: int | None = None
    ) -> list[Resource]:
        """``GET [base]/[type]?params``, following ``next`` links to the last page.

        Returns the resources of every entry except ``search.mode = outcome`` ones (so
        ``_include``-d resources are returned too). See https://hl7.org/fhir/R4/search.html.
        """
        limit = max_pages or self.max_pages
        found: list[Resource] = []
        pages = 0
        async with contextlib.aclosing(self.search_pages(resource_type, params)) as results:
            async for page in results:
                found.extend(page.resources)
                pages += 1
                if page.more and pages >= limit:
                    raise FhirPagingLimitError(
                        f"more than {limit} result pages; narrow the search or raise max_pages",
                        operation="search",
                        resource_type=resource_type,
                    )
        return found

    async def search_pages(
        self, resource_type: str, params: Sequence[tuple[str, str]] = ()
    ) -> AsyncGenerator[SearchPage, None]:
        """:meth:`search` one page at a time (https://hl7.org/fhir/R4/search.html#paging), so a
        caller can store each page before asking for the next, and stop whenever it likes (use
        ``contextlib.aclosing``). No page limit of its own."""
        url: str = _checked_type(resource_type, "search")
        query: list[tuple[str, str]] | None = list(params)
        while True:
            response = await self.transport.send("search", resource_type, "GET", url, params=query)
            bundle = decode_resource(response, "search", "Bundle")
            found: list[Resource] = []
            for entry in _list(bundle.get("entry")):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                mode = _dict(entry.get("search")).get("mode") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and mode != "outcome":
                    found.append(resource)
            next_url = _next_link(bundle)
            yield SearchPage(found, next_url is not None)
            if next_url is None:
                return
            url, query = self.transport.same_origin(next_url, resource_type), None

    async def create(
        self, resource: Resource, *, if_none_exist: Sequence[tuple[str, str]] | None = None
    ) -> Resource:
        """``POST [base]/[type]`` (https://hl7.org/fhir/R4/http.html#create); returns the stored
        resource with its server-assigned id and ``meta.versionId``. ``if_none_exist`` makes it a
        conditional create (https://hl7.org/fhir/R4/http.html#ccreate): a match is returned instead."""
        resource_type = _checked_type(str(resource.get("resourceType", "")), "create")
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = str(httpx.QueryParams(tuple(if_none_exist)))
        response = await self.transport.send(
            "create", resource_type, "POST", resource_type, content=_encode(resource), headers=headers,
        )
        return await self._written(response, "create", resource_type)

    async def update(self, resource: Resource, if_match: str | None = None) -> Resource:
        """``PUT [base]/[type]/[id]``; ``if_match`` (a version id ``"3"`` or an ETag ``W/"3"``)
        makes the server refuse with 412 if someone changed it meanwhile
        (https://hl7.org/fhir/R4/http.html#update)."""
        resource_type = _checked_type(str(resource.get("resourceType", "")), "update")
        path = f"{resource_type}/{_checked_id(str(resource.get('id', '')), 'update')}"
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_match is not None:
            headers["If-Match"] = _etag(if_match)
        response = await self.transport.send("update", resource_type, "PUT", path, content=_encode(resource),
                                    headers=headers)
        return await self._written(response, "update", resource_type)

    async def delete(self, resource_type: str, resource_id: str) -> None:
        """``DELETE [base]/[type]/[id]`` (https://hl7.org/fhir/R4/http.html#delete)."""
        path = f"{_checked_type(resource_type, 'delete')}/{_checked_id(resource_id, 'delete')}"
        await self.transport.send("delete", resource_type, "DELETE", path)

    async def patch(
        self, resource_type: str, resource_id: str, operations: Sequence[dict[str, Any]],
        if_match: str | None = None,
    ) -> Resource:
        """``PATCH [base]/[type]/[id]`` with a JSON Patch (RFC 6902) body
        (https://hl7.org/fhir/R4/http.html#patch): only the named elements change, so edits
        others made to the rest of the resource survive. ``if_match`` as in :meth:`update`."""
        path = f"{_checked_type(resource_type, 'patch')}/{_checked_id(resource_id, 'patch')}"
        headers = {"Content-Type": JSON_PATCH, "Prefer": "return=representation"}
        if if_match is not None:
            headers["If-Match"] = _etag(if_match)
        body = json.dumps(list(operations), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        response = await self.transport.send("patch", resource_type, "PATCH", path, content=body, headers=headers)
        return await self._written(response, "patch", resource_type)

    async def transaction(self, bundle: Resource) -> Resource:
        """``POST [base]`` with a ``transaction`` (or ``batch``) Bundle
        (https://hl7.org/fhir/R4/http.html#transaction); returns the response Bundle. A refused
        transaction raises the error class of its HTTP status (412 -> :class:`FhirConflictError`)."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            raise FhirRequestError("not a transaction or batch Bundle", operation="transaction")
        response = await self.transport.send(
            "transaction", None, "POST", "", content=_encode(bundle),
            headers={"Content-Type": FHIR_JSON, "Prefer": "return=representation"},
        )
        return decode_resource(response, "transaction", "Bundle")

    async def history(self, resource_type: str, resource_id: str) -> list[Resource]:
        """``GET [base]/[type]/[id]/_history`` (https://hl7.org/fhir/R4/http.html#history): every
        stored version, newest first as servers return them; deletions (entries without a
        resource) are skipped. Follows ``next`` links up to ``max_pages``."""
        url = f"{_checked_type(resource_type, 'history')}/{_checked_id(resource_id, 'history')}/_history"
        found: list[Resource] = []
        for _page in range(self.max_pages):
            response = await self.transport.send("history", resource_type, "GET", url)
            bundle = decode_resource(response, "history", "Bundle")
            found.extend(entry["resource"] for entry in _list(bundle.get("entry"))
                         if isinstance(entry, dict) and isinstance(entry.get("resource"), dict))
            next_url = _next_link(bundle)
            if next_url is None:
                return found
            url = self.transport.same_origin(next_url, resource_type)
        raise FhirPagingLimitError(f"more than {self.max_pages} history pages", operation="history",
                                   resource_type=resource_type)

    async def capabilities(self) -> Resource:
        """``GET [base]/metadata`` (https://hl7.org/fhir/R4/http.html#capabilities)."""
        response = await self.transport.send("capabilities", None, "GET", "metadata")
        return decode_resource(response, "capabilities", "CapabilityStatement")

    # --- a write's answer ----------------------------------------------------------------

    async def _written(self, response: httpx.Response, operation: str, resource_type: str) -> Resource:
        if response.content.strip():
            return decode_resource(response, operation, resource_type)
        # The server ignored Prefer: return=representation; the Location header names the version.
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        if not location:
            raise FhirInvalidResponseError("write succeeded but the server returned neither the "
                                           "resource nor a Location", operation=operation,
                                           resource_type=resource_type, status_code=response.status_code)
        location = self.transport.same_origin(location, resource_type)
        reread = await self.transport.send(operation, resource_type, "GET", location)
        return decode_resource(reread, operation, resource_type)


def _next_link(bundle: Resource) -> str | None:
    for link in _list(bundle.get("link")):
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _checked_type(resource_type: str, operation: str) -> str:
    if not _TYPE_RE.match(resource_type):
        raise FhirRequestError("not a FHIR resource type name", operation=operation)
    return resource_type


def _checked_id(value: str, operation: str) -> str:
    if not _ID_RE.match(value):
        raise FhirRequestError("not a valid FHIR id", operation=operation, resource_type=None)
    return value


def _etag(version: str) -> str:
    value = version.strip()
    return value if value.startswith(('W/"', '"')) else f'W/"{value}"'


def _encode(resource: Resource) -> bytes:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
