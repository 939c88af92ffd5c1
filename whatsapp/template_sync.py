"""Bringing the WABA's templates in line with the catalogue, and reporting which ones may be sent.

:func:`sync_templates` creates the catalogue's templates that the WABA lacks and reports every one with its
remote status (Graph API "WhatsApp Business Account Message Templates" reference, list and create). **The
service only ever sends APPROVED templates**: PENDING, REJECTED, PAUSED or DISABLED ones are reported
(:attr:`SyncReport.not_approved`) for a person to act on, never used. Sync is idempotent: it lists before
creating, so re-running it after a lost answer reports the template as ``exists``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from whatsapp.catalogue import CatalogueError, TemplateCatalogue
from whatsapp.errors import AccountBlockedError, WhatsAppError
from whatsapp.template_payloads import CreatedTemplate, RemoteTemplate

APPROVED = "APPROVED"

SyncAction = Literal["created", "exists", "failed"]


class TemplateRegistry(Protocol):
    """What :func:`sync_templates` needs (:class:`whatsapp.templates_api.TemplatesClient`, or a fake)."""

    async def list_templates(self) -> list[RemoteTemplate]: ...

    async def create_template(self, template_definition: Mapping[str, Any]) -> CreatedTemplate: ...


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
