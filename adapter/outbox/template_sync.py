"""Keeping ``template_state`` equal to the WhatsApp Business Account.

``bridge templates sync`` creates the project's templates that the WABA lacks and records every
state; the service reads the states at start-up (``whatsapp_sync_templates``); Meta's
``message_template_status_update`` webhooks keep them current in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from adapter.outbox.templates import record_states
from adapter.settings import Settings
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.template_payloads import CreatedTemplate, RemoteTemplate
from whatsapp.template_sync import SyncReport, TemplateRegistry, sync_templates
from whatsapp.templates_api import TemplatesClient

Progress = Callable[[int, int | None], None]


def templates_client(settings: Settings) -> TemplatesClient:
    return TemplatesClient(settings.whatsapp_api_base_url, settings.whatsapp_api_version, settings.whatsapp_waba_id,
                           settings.whatsapp_access_token.get_secret_value(),
                           timeout_seconds=settings.whatsapp_timeout_seconds)


async def read_states(settings: Settings, engine: Engine) -> int:
    """Records the state of every template of the WABA; returns how many templates it holds."""
    async with templates_client(settings) as client:
        remote = await client.list_templates()
    record_states(engine, [(t.name, t.language, t.status, t.id, None) for t in remote])
    return len(remote)


async def sync(settings: Settings, engine: Engine, catalogue: TemplateCatalogue,
               progress: Progress | None = None) -> SyncReport:
    """Creates the missing catalogue templates, then records every state. ``progress`` gets (catalogue
    templates settled, catalogue templates): those the WABA holds once listed, then one per creation tried
    (each a Graph API call, the slow part)."""
    async with templates_client(settings) as client:
        registry: TemplateRegistry = client if progress is None else _Counting(client, catalogue, progress)
        report = await sync_templates(registry, catalogue)
        remote = await client.list_templates()
    record_states(engine, [(t.name, t.language, t.status, t.id, None) for t in remote])
    if progress is not None:
        progress(len(catalogue), len(catalogue))  # templates not attempted after a blocked account included
    return report


class _Counting:
    """The WABA as :func:`whatsapp.template_sync.sync_templates` sees it, counting what it settles."""

    def __init__(self, client: TemplateRegistry, catalogue: TemplateCatalogue, progress: Progress) -> None:
        self.client, self.progress, self.done = client, progress, 0
        self.wanted = {(template.name, template.language) for template in catalogue}

    async def list_templates(self) -> list[RemoteTemplate]:
        remote = await self.client.list_templates()
        self.done = len(self.wanted & {(template.name, template.language) for template in remote})
        self.progress(self.done, len(self.wanted))
        return remote

    async def create_template(self, template_definition: Mapping[str, Any]) -> CreatedTemplate:
        try:
            return await self.client.create_template(template_definition)
        finally:  # a failed creation is settled too: reported, not retried
            self.done += 1
            self.progress(self.done, len(self.wanted))
