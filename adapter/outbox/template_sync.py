"""Keeping ``template_state`` equal to the WhatsApp Business Account.

``bridge templates sync`` creates the project's templates that the WABA lacks and records every
state; the service reads the states at start-up (``whatsapp_sync_templates``); Meta's
``message_template_status_update`` webhooks keep them current in between.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from adapter.outbox.templates import record_states
from adapter.settings import Settings
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.template_sync import SyncReport, sync_templates
from whatsapp.templates_api import TemplatesClient


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


async def sync(settings: Settings, engine: Engine, catalogue: TemplateCatalogue) -> SyncReport:
    """Creates the missing catalogue templates, then records every state."""
    async with templates_client(settings) as client:
        report = await sync_templates(client, catalogue)
        remote = await client.list_templates()
    record_states(engine, [(t.name, t.language, t.status, t.id, None) for t in remote])
    return report
