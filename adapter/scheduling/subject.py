"""What the decide step (:mod:`adapter.scheduling.decide`) works out once per resource version, and the
render contexts it builds (DESIGN.md, "One path builds message content": rule → typed parameters →
render → PHI guard → outbox).

A :class:`Subject` is shared by every message about one version — its confirmation, its reminders, or an
operator's notice about it (:mod:`adapter.scheduling.site_notices`): the patient's mobile number, the start
the message is bound to, and the strings the PHI guard looks for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import Any

from adapter.scheduling.decision import DecideConfig, DecideItem, start_bound
from ehr.patient import ContactResult, mobile_number
from mappings.phi_guard import IdentifyingStrings, identifying_strings
from mappings.render import RenderContext, RenderError


class Subject:
    """One version being decided: its contact, start and identifying strings, each computed on first use;
    ``recipient_key`` is the number's index once a message to it was queued in this batch."""

    def __init__(self, item: DecideItem, region: str) -> None:
        self.item = item
        self.region = region
        self.recipient_key: bytes | None = None

    @cached_property
    def contact(self) -> ContactResult:
        return mobile_number(self.item.patient or {}, self.region)

    @cached_property
    def start(self) -> datetime | None:
        return start_bound(self.item.resource)

    @cached_property
    def identifying(self) -> IdentifyingStrings:
        return identifying_strings(self.item.resource, self.item.patient, self.item.related)


class ListSink:
    """Collects token rows minted during a render; they are inserted only if the message is queued."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def add(self, instance: Any) -> None:
        self.rows.append(instance)


def _no_tokens(what: str) -> str:
    raise RenderError("reminder", "buttons", what, "reminders carry no links or buttons")


def render_contexts(config: DecideConfig) -> Callable[[str], RenderContext]:
    """Render contexts for moved reminders: the decide step's zone, profile and site labels."""
    return lambda language: RenderContext(
        language=language, profile=config.profile, zone=config.zone, site_labels=config.site_labels,
        default_site_label=config.default_site_label, mint_link=_no_tokens, mint_action=_no_tokens)
