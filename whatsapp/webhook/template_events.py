"""Reading template review and quality events (the two ``message_template_*`` webhook fields).

``field == "message_template_status_update"`` ("message_template_status_update webhook reference"):
``value`` = ``{event, message_template_id, message_template_name, message_template_language, reason,
message_template_category?, other_info?: {title, description}, …}`` → :class:`TemplateStatusEvent`.

``field == "message_template_quality_update"`` ("message_template_quality_update webhook reference"):
``value`` = ``{previous_quality_score, new_quality_score, message_template_id, …}`` (GREEN, YELLOW, RED,
UNKNOWN) → :class:`TemplateQualityEvent`, kept apart from review events: a YELLOW/RED score warns before
Meta pauses a template, but it is not a review status (a consumer may store a review ``event`` as the
template's state, never a score). A quality body sent under the status field (as an older version of
Meta's example shows) is read as a quality update. Both carry the WABA id and ``time`` of their entry.

A review event whose template name is over Meta's 512 characters, language code over 16 or template id
over 64 names no template we could have, and is refused like one without an ``event``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp.webhook.fields import WebhookPayloadError, clean_text, int32_or_none, opt_str

TEMPLATE_STATUS_FIELD = "message_template_status_update"
TEMPLATE_QUALITY_FIELD = "message_template_quality_update"
_MAX_CHARS = {"message_template_name": 512, "message_template_language": 16, "message_template_id": 64}


@dataclass(frozen=True, slots=True)
class TemplateStatusEvent:
    """A template's review or lifecycle event (APPROVED, REJECTED, PAUSED, …); scores are TemplateQualityEvent."""

    template_id: str | None
    name: str | None
    language: str | None
    event: str
    reason: str | None  # rejection reason; "NONE" when paused; None when absent or null
    category: str | None = None
    title: str | None = None  # other_info.title: FIRST_PAUSE, SECOND_PAUSE, UNPAUSE, …
    waba_id: str | None = None
    entry_time: int | None = None  # entry.time, Unix seconds


@dataclass(frozen=True, slots=True)
class TemplateQualityEvent:
    """A template's quality score changed (GREEN, YELLOW, RED, UNKNOWN)."""

    template_id: str | None
    name: str | None
    language: str | None
    new_score: str
    previous_score: str | None
    waba_id: str | None = None
    entry_time: int | None = None


def is_quality_update(field: str, value: dict[str, Any]) -> bool:
    """True for a quality body, under its own field or (older example) under the status field."""
    return field == TEMPLATE_QUALITY_FIELD or ("event" not in value and "new_quality_score" in value)


def read_template_status(value: dict[str, Any], where: str, entry: dict[str, Any]) -> TemplateStatusEvent:
    event = value.get("event")
    if not isinstance(event, str) or not event:
        raise WebhookPayloadError(f"{where}.event is missing")
    for key, limit in _MAX_CHARS.items():
        if len(opt_str(value.get(key)) or "") > limit:
            raise WebhookPayloadError(f"{where}.{key} is longer than {limit} characters")
    other_info = value.get("other_info")
    return TemplateStatusEvent(
        template_id=opt_str(value.get("message_template_id")),
        name=opt_str(value.get("message_template_name")),
        language=opt_str(value.get("message_template_language")),
        event=clean_text(event).upper(),
        reason=opt_str(value.get("reason")),
        category=opt_str(value.get("message_template_category")),
        title=opt_str(other_info.get("title")) if isinstance(other_info, dict) else None,
        waba_id=opt_str(entry.get("id")),
        entry_time=_entry_time(entry),
    )


def read_template_quality(value: dict[str, Any], where: str, entry: dict[str, Any]) -> TemplateQualityEvent:
    score = value.get("new_quality_score")
    if not isinstance(score, str) or not score:
        raise WebhookPayloadError(f"{where}.new_quality_score is missing")
    previous = value.get("previous_quality_score")
    return TemplateQualityEvent(
        template_id=opt_str(value.get("message_template_id")),
        name=opt_str(value.get("message_template_name")),
        language=opt_str(value.get("message_template_language")),
        new_score=clean_text(score).upper(),
        previous_score=str(previous).upper() if previous is not None else None,
        waba_id=opt_str(entry.get("id")),
        entry_time=_entry_time(entry),
    )


def _entry_time(entry: dict[str, Any]) -> int | None:
    value = entry.get("time")
    return int32_or_none(value)
