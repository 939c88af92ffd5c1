"""Async client for message-template management on a WhatsApp Business Account (Graph API).

Implements the "WhatsApp Business Account Message Templates" reference of the Graph API
(https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/message_templates/)
and Meta's "Template fundamentals" guide (Creation, Common syntax):

* ``GET {base}/{version}/{waba_id}/message_templates?fields=id,name,language,status,category&limit=N``
  answers ``{"data": [...], "paging": {"cursors": {"before", "after"}, "next"?}}``. Graph pagination
  ("Paginated results", https://developers.facebook.com/docs/graph-api/results): ``next`` is absent on
  the last page, while ``cursors`` may still be there; so the client asks for the next page only while
  ``next`` is present, and builds that request itself from ``cursors.after`` (or the ``after`` query
  parameter of ``next``): the bearer token is never sent to a URL taken from a response.
* ``POST {base}/{version}/{waba_id}/message_templates`` with ``{name, language, category,
  parameter_format?, components}`` answers ``{"id", "status", "category"}`` (status is usually PENDING:
  Meta reviews every new template; at most 100 creations per WABA per hour).

Both use ``Authorization: Bearer``; a non-2xx answer goes through :func:`whatsapp.errors.classify`.
The client has its own small aiohttp session (management calls are rare; the send path keeps its tuned
:class:`whatsapp.transport.AiohttpTransport`).

:func:`sync_templates` creates the catalogue's templates that the WABA lacks and reports every one with its
remote status. **The service only ever sends APPROVED templates**: PENDING, REJECTED, PAUSED or DISABLED
ones are reported (:attr:`SyncReport.not_approved`) for a person to act on, never used. Sync is idempotent:
it lists before creating, so re-running it after a lost answer reports the template as ``exists``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp

from whatsapp.catalogue import CatalogueError, TemplateCatalogue
from whatsapp.errors import AccountBlockedError, AmbiguousSendError, RetryableError, WhatsAppError, classify
from whatsapp.sender import parse_json_object

logger = logging.getLogger(__name__)

APPROVED = "APPROVED"
LIST_FIELDS = "id,name,language,status,category"
_CREATION_KEYS = ("name", "language", "category", "parameter_format", "components")

SyncAction = Literal["created", "exists", "failed"]


@dataclass(frozen=True, slots=True)
class RemoteTemplate:
    """A template as the WABA holds it."""

    id: str
    name: str
    language: str
    status: str  # APPROVED, PENDING, REJECTED, PAUSED, DISABLED, IN_APPEAL, …
    category: str | None


@dataclass(frozen=True, slots=True)
class CreatedTemplate:
    """Meta's answer to a creation: the new template's id, review status and (possibly corrected) category."""

    id: str
    status: str | None
    category: str | None


class TemplateRegistry(Protocol):
    """What :func:`sync_templates` needs (the client below, or a fake)."""

    async def list_templates(self) -> list[RemoteTemplate]: ...

    async def create_template(self, template_definition: Mapping[str, Any]) -> CreatedTemplate: ...


def creation_body(template_definition: Mapping[str, Any]) -> dict[str, Any]:
    """Meta's creation body from a catalogue definition; raises :class:`CatalogueError` if it cannot be sent.

    URL buttons must hold an absolute ``https://`` URL: a catalogue loaded without the public base URL still
    has ``/l/{{1}}``, and Meta fixes a URL button's prefix when it approves the template.
    """
    missing = [key for key in ("name", "language", "category", "components") if not template_definition.get(key)]
    if missing:
        raise CatalogueError(f"template definition lacks {', '.join(missing)}")
    body = {key: template_definition[key] for key in _CREATION_KEYS if key in template_definition}
    for component in body["components"]:
        for button in component.get("buttons", ()) if isinstance(component, Mapping) else ():
            url = button.get("url") if isinstance(button, Mapping) else None
            if url is not None and not str(url).startswith("https://"):
                raise CatalogueError(f"template {body['name']!r}: URL button needs an absolute https URL "
                                     "(load the catalogue with the public base URL)")
    return body


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
            found.extend(_remote(item) for item in data)
            after = _next_cursor(page.get("paging"))
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
        template_id = answer.get("id")
        if not isinstance(template_id, str | int) or isinstance(template_id, bool) or template_id == "":
            raise AmbiguousSendError("Template create response without an id", http_status=200)
        logger.info("template %s/%s submitted: %s", body["name"], body["language"], answer.get("status"))
        return CreatedTemplate(id=str(template_id), status=_opt_str(answer.get("status")),
                               category=_opt_str(answer.get("category")))

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


@dataclass(frozen=True, slots=True)
class SyncItem:
    """What sync did for one catalogue template, and the status Meta holds for it."""

    name: str
    language: str
    action: SyncAction
    remote_status: str | None  # None when the template is not on the WABA (creation failed)
    template_id: str | None = None
    error_code: int | None = None  # Meta's code when creation failed; None for a local refusal
    error: str | None = None  # short reason (error title), never the template's text

    @property
    def usable(self) -> bool:
        """Only APPROVED templates may be sent."""
        return self.remote_status == APPROVED


@dataclass(frozen=True, slots=True)
class SyncReport:
    """One item per catalogue template, in catalogue order."""

    items: tuple[SyncItem, ...]

    @property
    def created(self) -> list[SyncItem]:
        return [item for item in self.items if item.action == "created"]

    @property
    def failed(self) -> list[SyncItem]:
        return [item for item in self.items if item.action == "failed"]

    @property
    def usable(self) -> list[SyncItem]:
        return [item for item in self.items if item.usable]

    @property
    def not_approved(self) -> list[SyncItem]:
        """Templates the service cannot send yet (pending review) or any more (rejected, paused, …)."""
        return [item for item in self.items if not item.usable]


async def sync_templates(client: TemplateRegistry, catalogue: TemplateCatalogue) -> SyncReport:
    """Creates the catalogue templates the WABA lacks; reports every template with its remote status.

    Listing failures raise (nothing can be decided without the list). A failed creation is reported and the
    sync goes on, except after an :class:`~whatsapp.errors.AccountBlockedError` (token, permissions): then
    no further creation is attempted and the remaining missing templates are reported failed with that code.
    """
    remote = {(t.name, t.language): t for t in await client.list_templates()}
    items: list[SyncItem] = []
    blocked: WhatsAppError | None = None
    for template in catalogue:
        name, language = template.name, template.language
        existing = remote.get((name, language))
        if existing is not None:
            items.append(SyncItem(name, language, "exists", existing.status, existing.id))
            continue
        if blocked is not None:
            items.append(SyncItem(name, language, "failed", None, error_code=blocked.code,
                                  error=f"not attempted: {blocked.title}"))
            continue
        try:
            created = await client.create_template(template.raw)
        except CatalogueError as exc:
            items.append(SyncItem(name, language, "failed", None, error=str(exc)))
        except WhatsAppError as exc:
            if isinstance(exc, AccountBlockedError):
                blocked = exc
            items.append(SyncItem(name, language, "failed", None, error_code=exc.code, error=exc.title))
        else:
            items.append(SyncItem(name, language, "created", created.status, created.id))
    return SyncReport(tuple(items))


def _remote(item: Any) -> RemoteTemplate:
    fields = item if isinstance(item, dict) else {}
    values = {key: fields.get(key) for key in ("id", "name", "language", "status")}
    if any(not isinstance(v, str | int) or isinstance(v, bool) or v == "" for v in values.values()):
        raise RetryableError("Template list item without id, name, language or status", http_status=200)
    return RemoteTemplate(id=str(values["id"]), name=str(values["name"]), language=str(values["language"]),
                          status=str(values["status"]).upper(), category=_opt_str(fields.get("category")))


def _next_cursor(paging: Any) -> str | None:
    """The ``after`` cursor of the next page, or None on the last page (no ``next``)."""
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    if not after:
        after = next(iter(parse_qs(urlsplit(str(paging["next"])).query).get("after", [])), None)
    if not after:
        raise RetryableError("Template list has a next page but no cursor", http_status=200)
    return str(after)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
