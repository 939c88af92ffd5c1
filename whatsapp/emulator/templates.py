"""The WhatsApp Business Account's template registry: statuses, creation, review, listing.

Follows Meta's "Message Templates" reference (``GET|POST /{Version}/{WABA-ID}/message_templates``,
https://developers.facebook.com/docs/whatsapp/business-management-api/message-templates) and "Template
management": a created template is ``PENDING`` until reviewed, then ``APPROVED`` (or ``REJECTED``); an
approved one can later be ``PAUSED`` (low quality) or ``DISABLED``. Sending a template that is not approved
fails synchronously: paused → **132015**, disabled → **132016**, missing, pending or rejected → **132001**
("Error codes").

Creation checks (Meta's template creation guide): ``name`` of lowercase letters, digits and underscores, at
most 512 characters; ``language`` a locale code; ``category`` one of MARKETING, UTILITY, AUTHENTICATION; a
BODY component of at most 1,024 characters; header and footer text at most 60. A name that already exists
in that language is refused with code **100**, subcode **2388024** ("Content in This Language Already
Exists"); the subcode is the one public client code handles for duplicates, not one Meta's reference lists.

The registry starts with the project's catalogue (``whatsapp/templates/*.json``) as APPROVED. Review runs on
the virtual clock: a template created with ``template_review_seconds = N`` is approved once the clock has
passed creation + N (checked when it is looked up, listed, and when the clock moves).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from whatsapp.catalogue import CatalogueError, Template, TemplateCatalogue, parse_template
from whatsapp.emulator.graph_errors import GraphError

STATUSES = frozenset({"APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED"})
CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
DEFAULT_FIELDS = ("name", "parameter_format", "components", "language", "status", "category", "id")
_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$")
_ID_BASE = 700_000_000_000_000
_TEXT_LIMITS = {"BODY": 1024, "HEADER": 60, "FOOTER": 60}
_SEND_ERRORS = {"PAUSED": (132015, "Template is paused due to low quality, so it cannot be sent"),
                "DISABLED": (132016, "Template has been disabled due to low quality, so it cannot be sent")}


@dataclass
class TemplateRecord:
    id: str
    name: str
    language: str
    category: str
    parameter_format: str
    components: list[Any]
    status: str
    template: Template
    approve_at: float | None = None  # virtual time a PENDING template is approved
    reason: str | None = None

    def to_json(self, wanted: Iterable[str] = DEFAULT_FIELDS) -> dict[str, Any]:
        values = {"id": self.id, "name": self.name, "language": self.language, "status": self.status,
                  "category": self.category, "components": self.components,
                  "parameter_format": self.parameter_format, "rejected_reason": self.reason or "NONE"}
        return {key: values[key] for key in ("id", *wanted) if key in values}


# (record, event, reason): tells the app to post the template status webhook.
StatusHook = Callable[[TemplateRecord, str, "str | None"], None]


class TemplateRegistry:
    """Templates by (name, language), in creation order; ``get`` is what the send path uses."""

    def __init__(self, catalogue: TemplateCatalogue, clock: Callable[[], float]) -> None:
        self._catalogue = catalogue
        self._clock = clock
        self.on_status_change: StatusHook | None = None
        self._by_key: dict[tuple[str, str], TemplateRecord] = {}
        self._next_id = _ID_BASE
        self.reset()

    def reset(self) -> None:
        """Back to the shipped catalogue, all APPROVED."""
        self._by_key.clear()
        for template in self._catalogue:
            self._add(template, "APPROVED", None)

    def _add(self, template: Template, status: str, approve_at: float | None) -> TemplateRecord:
        self._next_id += 1
        raw = template.raw
        record = TemplateRecord(
            id=str(self._next_id), name=template.name, language=template.language, category=template.category,
            parameter_format=template.parameter_format, components=list(raw.get("components", [])),
            status=status, template=template, approve_at=approve_at)
        self._by_key[(template.name, template.language)] = record
        return record

    def get(self, name: str, language: str) -> Template | None:
        """The sendable template, None if there is none; raises 132015/132016 for paused/disabled ones."""
        record = self._by_key.get((name, language))
        if record is None:
            return None
        if record.status != "APPROVED":
            self._settle(record)
            if record.status in _SEND_ERRORS:
                code, details = _SEND_ERRORS[record.status]
                raise GraphError(code, details)
            if record.status != "APPROVED":
                return None
        return record.template

    def record(self, name: str, language: str) -> TemplateRecord | None:
        return self._by_key.get((name, language))

    def _settle(self, record: TemplateRecord) -> None:
        if record.status == "PENDING" and record.approve_at is not None and record.approve_at <= self._clock():
            self.set_status(record, "APPROVED", None)

    def settle_all(self) -> None:
        for record in list(self._by_key.values()):
            self._settle(record)

    def set_status(self, record: TemplateRecord, status: str, reason: str | None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(sorted(STATUSES))}")
        record.status, record.reason = status, reason
        if status != "PENDING":
            record.approve_at = None
        if self.on_status_change is not None:
            self.on_status_change(record, status, reason)

    def create(self, body: Any, review_seconds: float) -> TemplateRecord:
        """``POST /message_templates``; raises :class:`GraphError` as Meta would."""
        if not isinstance(body, dict):
            raise GraphError(100, "Request body must be a JSON object")
        name, language, category = (_required(body, key) for key in ("name", "language", "category"))
        if not _NAME.match(name):
            raise GraphError(100, "Param name must contain only lowercase letters, digits and underscores, and be "
                                  "at most 512 characters long.")
        if not _LANGUAGE.match(language):
            raise GraphError(100, f"Param language is not a supported language code: {language}")
        if category.upper() not in CATEGORIES:
            raise GraphError(100, "Param category must be one of {MARKETING, UTILITY, AUTHENTICATION}")
        components = body.get("components")
        if not isinstance(components, list) or not components:
            raise GraphError(100, "The parameter components is required.")
        _check_components(components)
        if (name, language) in self._by_key:
            raise GraphError(100, message="Invalid parameter", subcode=2388024,
                             user_title="Content in This Language Already Exists",
                             user_msg=f"There is already {language} content for this template. You can create a "
                                      "new template and try again.")
        raw = {"name": name, "language": language, "category": category.upper(), "components": components,
               "parameter_format": str(body.get("parameter_format", "POSITIONAL")).upper()}
        try:
            template = parse_template(raw, source="message_templates")
        except CatalogueError as exc:
            raise GraphError(100, str(exc)) from None
        if review_seconds > 0:
            return self._add(template, "PENDING", self._clock() + review_seconds)
        record = self._add(template, "APPROVED", None)
        if self.on_status_change is not None:
            self.on_status_change(record, "APPROVED", None)
        return record

    def find(self, *, name: str | None = None, status: str | None = None, language: str | None = None,
             category: str | None = None) -> list[TemplateRecord]:
        """Creation order; ``name`` matches part of a name, ``status`` may list several (comma-separated)."""
        self.settle_all()
        statuses = {s.strip().upper() for s in status.split(",")} if status else None
        return [r for r in self._by_key.values()
                if (name is None or name in r.name) and (statuses is None or r.status in statuses)
                and (language is None or r.language == language)
                and (category is None or r.category == category.upper())]


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise GraphError(100, f"The parameter {key} is required.")
    return value


def _check_components(components: list[Any]) -> None:
    kinds = []
    for component in components:
        kind = str(component.get("type", "")).upper() if isinstance(component, dict) else ""
        if kind not in ("HEADER", "BODY", "FOOTER", "BUTTONS"):
            raise GraphError(100, f"Param components[]['type'] is not valid: {kind or 'missing'}")
        kinds.append(kind)
        limit = _TEXT_LIMITS.get(kind)
        text = component.get("text")
        if limit and text is not None and (not isinstance(text, str) or len(text) > limit):
            raise GraphError(100, f"{kind} text must be a string of at most {limit} characters")
        if kind == "BUTTONS":
            buttons = component.get("buttons")
            if not isinstance(buttons, list) or not 1 <= len(buttons) <= 10:
                raise GraphError(100, "BUTTONS needs 1 to 10 buttons")
    if "BODY" not in kinds:
        raise GraphError(100, "A template needs a BODY component")
    if len(kinds) != len(set(kinds)):
        raise GraphError(100, "Each component type may appear only once")


def cursor(record_id: str) -> str:
    return base64.urlsafe_b64encode(record_id.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        raise GraphError(100, "Param after/before is not a valid cursor") from None


def page(records: list[TemplateRecord], *, limit: int, after: str | None, before: str | None
         ) -> tuple[list[TemplateRecord], bool, bool]:
    """Graph cursor paging over ``records``: (this page, more after it, more before it)."""
    ids = [int(r.id) for r in records]
    if after:
        start = next((i for i, rid in enumerate(ids) if rid > decode_cursor(after)), len(ids))
        chosen = records[start:start + limit]
    elif before:
        end = next((i for i, rid in enumerate(ids) if rid >= decode_cursor(before)), len(ids))
        start = max(0, end - limit)
        chosen = records[start:end]
    else:
        start, chosen = 0, records[:limit]
    return chosen, start + len(chosen) < len(records), start > 0
