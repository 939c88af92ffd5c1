"""The bodies of the template-management calls: the creation body we send, and Meta's answers read into types.

Implements, of the Graph API's "WhatsApp Business Account Message Templates" reference
(https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/message_templates/)
and Meta's "Template fundamentals" guide (Creation, Common syntax):

* the creation body ``{name, language, category, parameter_format?, components}`` and its answer
  ``{"id", "status", "category"}`` (status is usually PENDING: Meta reviews every new template);
* list items ``{id, name, language, status, category}``;
* Graph pagination ("Paginated results", https://developers.facebook.com/docs/graph-api/results): ``next`` is
  absent on the last page while ``cursors`` may still be there, so the next page is asked for only while
  ``next`` is present, by its ``cursors.after`` (or the ``after`` query parameter of ``next``): the client
  builds that request itself, so the bearer token is never sent to a URL taken from a response.

A list or paging answer that cannot be read raises :class:`~whatsapp.errors.RetryableError`; a creation answer
without an id raises :class:`~whatsapp.errors.AmbiguousSendError` (the template may exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from whatsapp.catalogue import CatalogueError
from whatsapp.errors import AmbiguousSendError, RetryableError

_CREATION_KEYS = ("name", "language", "category", "parameter_format", "components")


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


def read_created(answer: dict[str, Any]) -> CreatedTemplate:
    """The creation answer; without an id Meta may still have created it, so the outcome is ambiguous."""
    template_id = answer.get("id")
    if not isinstance(template_id, str | int) or isinstance(template_id, bool) or template_id == "":
        raise AmbiguousSendError("Template create response without an id", http_status=200)
    return CreatedTemplate(id=str(template_id), status=_opt_str(answer.get("status")),
                           category=_opt_str(answer.get("category")))


def read_remote(item: Any) -> RemoteTemplate:
    """One item of a list page."""
    fields = item if isinstance(item, dict) else {}
    values = {key: fields.get(key) for key in ("id", "name", "language", "status")}
    if any(not isinstance(v, str | int) or isinstance(v, bool) or v == "" for v in values.values()):
        raise RetryableError("Template list item without id, name, language or status", http_status=200)
    return RemoteTemplate(id=str(values["id"]), name=str(values["name"]), language=str(values["language"]),
                          status=str(values["status"]).upper(), category=_opt_str(fields.get("category")))


def next_cursor(paging: Any) -> str | None:
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
