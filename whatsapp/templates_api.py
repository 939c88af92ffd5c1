"""Async client for message-template management on a WhatsApp Business Account (Graph API).

Implements the calls of the Graph API's "WhatsApp Business Account Message Templates" reference
(https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/message_templates/):

* ``GET {base}/{version}/{waba_id}/message_templates?fields=id,name,language,status,category&limit=N``,
  page after page (``{"data": [...], "paging": ...}``) until the last;
* ``POST {base}/{version}/{waba_id}/message_templates`` with the creation body (at most 100 creations per
  WABA per hour).

Bodies and answers are built and read in :mod:`whatsapp.template_payloads`. Both calls use
``Authorization: Bearer``; a non-2xx answer goes through :func:`whatsapp.errors.classify`. The client has
its own small aiohttp session (management calls are rare; the send path keeps its tuned
:class:`whatsapp.transport.AiohttpTransport`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from whatsapp.errors import AmbiguousSendError, RetryableError, classify
from whatsapp.sender import parse_json_object
from whatsapp.template_payloads import (
    CreatedTemplate,
    RemoteTemplate,
    creation_body,
    next_cursor,
    read_created,
    read_remote,
)

logger = logging.getLogger(__name__)

LIST_FIELDS = "id,name,language,status,category"


class TemplatesClient:
    """Lists and creates the templates of one WABA. Usable as an async context manager."""

    def __init__(
        self,
        base_url: str,
        api_version: str,
        waba_id: str,
        access_token: str,
        *,
        timeout_seconds: float = 10.0,
        page_size: int = 100,
        max_pages: int = 100,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not access_token:
            raise ValueError("access_token is empty")
        self._url = f"{base_url.rstrip('/')}/{api_version}/{waba_id}/message_templates"
        self._headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=2 * timeout_seconds, connect=timeout_seconds,
                                              sock_read=timeout_seconds)
        self._page_size = page_size
        self._max_pages = max_pages
        self._session = session
        self._owns_session = session is None

    @property
    def url(self) -> str:
        return self._url

    async def list_templates(self) -> list[RemoteTemplate]:
        """Every template of the WABA, following the pages to the end."""
        base_params = {"fields": LIST_FIELDS, "limit": str(self._page_size)}
        params = dict(base_params)
        found: list[RemoteTemplate] = []
        seen_cursors: set[str] = set()
        for _ in range(self._max_pages):
            page = await self._call("GET", params=params)
            data = page.get("data")
            if not isinstance(data, list):
                raise RetryableError("Template list response without data", http_status=200)
            found.extend(read_remote(item) for item in data)
            after = next_cursor(page.get("paging"))
            if after is None:
                return found
            if after in seen_cursors:
                raise RetryableError("Template list paging repeats a cursor", http_status=200)
            seen_cursors.add(after)
            params = {**base_params, "after": after}
        raise RetryableError(f"Template list has more than {self._max_pages} pages")

    async def create_template(self, template_definition: Mapping[str, Any]) -> CreatedTemplate:
        """Submits one template for review; returns its id and status (usually PENDING)."""
        body = creation_body(template_definition)
        answer = await self._call("POST", body=json.dumps(body, ensure_ascii=False).encode("utf-8"))
        created = read_created(answer)
        logger.info("template %s/%s submitted: %s", body["name"], body["language"], answer.get("status"))
        return created

    async def _call(self, method: str, *, params: Mapping[str, str] | None = None,
                    body: bytes | None = None) -> dict[str, Any]:
        session = self._ensure_session()
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with session.request(method, self._url, params=params, data=body, headers=headers,
                                       timeout=self._timeout) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise RetryableError(f"Request not sent ({type(exc).__name__})") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if method == "GET":
                raise RetryableError(f"No response ({type(exc).__name__})") from exc
            raise AmbiguousSendError(f"No response after sending ({type(exc).__name__})") from exc
        parsed = parse_json_object(raw)
        if not 200 <= status < 300:
            error = classify(status, parsed)
            logger.info("template api %s failed: %s", method, error)
            raise error
        if parsed is None:
            raise RetryableError("Template API answered without a JSON object", http_status=status)
        return parsed

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            self._owns_session = True
        return self._session

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        if self._owns_session:
            self._session = None

    async def __aenter__(self) -> TemplatesClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
