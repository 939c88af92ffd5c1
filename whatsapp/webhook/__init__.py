"""Parsing of Meta's WhatsApp Business Account webhook bodies into typed events (Meta's "Webhooks" reference).

- :mod:`whatsapp.webhook.parse` — :func:`parse_webhook`: the envelope, each change to its reader, one batch.
- :mod:`whatsapp.webhook.statuses` — delivery statuses (:class:`StatusEvent`).
- :mod:`whatsapp.webhook.messages` — incoming and system messages (:class:`InboundMessage`).
- :mod:`whatsapp.webhook.template_events` — template review and quality events.
- :mod:`whatsapp.webhook.contacts` — phone id / business-scoped user id completion from ``contacts[]``.
- :mod:`whatsapp.webhook.fields` — shared field readers and :class:`WebhookPayloadError`.
"""

from whatsapp.webhook.fields import WebhookErrorItem, WebhookPayloadError
from whatsapp.webhook.messages import InboundMessage
from whatsapp.webhook.parse import WebhookBatch, parse_webhook
from whatsapp.webhook.statuses import StatusEvent
from whatsapp.webhook.template_events import TemplateQualityEvent, TemplateStatusEvent

__all__ = [
    "InboundMessage",
    "StatusEvent",
    "TemplateQualityEvent",
    "TemplateStatusEvent",
    "WebhookBatch",
    "WebhookErrorItem",
    "WebhookPayloadError",
    "parse_webhook",
]
