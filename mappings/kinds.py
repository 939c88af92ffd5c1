"""Parameter kinds: the only way a value reaches a message (DESIGN.md, "One path builds message content").

Each kind is a small pydantic model (the shape a rule file uses to ask for it) with a ``value``
method that computes the outgoing string. No kind copies a FHIR string into a message: dates and
times are re-formatted from a parsed instant, the site label comes from configuration, and tokens
come from the caller's minters. Which kinds a PHI profile allows lives in :mod:`mappings.policy`.

FHIR inputs: ``Appointment.start`` is an ``instant`` (https://hl7.org/fhir/R4/appointment.html);
participants' actors are References (https://hl7.org/fhir/R4/references.html).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from pydantic import BaseModel, ConfigDict, Field

from mappings.context import RenderContext
from mappings.fhir_time import NotAnInstant, parse_instant
from mappings.fhirpath import evaluate

LinkTarget = Literal["report", "appointment", "document", "statement"]
# The same vocabularies as portal_links.store.PORTAL_PATHS and adapter.outbox.action_tokens.ACTIONS.
Action = Literal["confirm", "reschedule", "cancel", "talk_to_staff", "stop"]
LINK_TARGETS: tuple[str, ...] = get_args(LinkTarget)
ACTIONS: tuple[str, ...] = get_args(Action)

# Opaque tokens only: URL-safe (RFC 3986 unreserved) so a link suffix needs no escaping, at least
# 8 characters because anything shorter cannot be unguessable, and bounded to catch minter bugs.
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{8,512}$")
_LOCATION_REF = re.compile(r"(?:^|/)(Location/[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
# CLDR puts U+202F (narrow no-break space) before AM/PM; older phones' fonts show it as a box, and
# Meta's template examples use a plain space, so both no-break spaces become ordinary spaces.
_ODD_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " "})


class ValueProblem(ValueError):
    """A parameter has no value we may send; the renderer adds the rule and position."""


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        raise NotImplementedError


class _FromInstant(_Param):
    source: str = Field(min_length=1, description="FHIRPath selecting one FHIR instant/dateTime.")

    def _local_moment(self, resource: Mapping[str, Any], ctx: RenderContext) -> datetime:
        try:
            found = evaluate(self.source, resource)
        except Exception as exc:  # fhirpathpy raises bare Exception on odd input
            raise ValueProblem(f"source {self.source} could not be evaluated") from exc
        if len(found) != 1:
            count = "nothing" if not found else f"{len(found)} values"
            raise ValueProblem(f"source {self.source} selected {count}; exactly one moment is needed")
        try:
            moment = parse_instant(found[0])
        except NotAnInstant as exc:
            raise ValueProblem(f"source {self.source} {exc}") from exc
        return moment.astimezone(ctx.zone)


class LocalDate(_FromInstant):
    """The date of an instant in the site's zone, written out in the message language
    (en_US ``Tuesday, December 1, 2026``; es ``martes, 1 de diciembre de 2026``)."""

    kind: Literal["local_date"]

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        return local_date_text(self._local_moment(resource, ctx), ctx.language)


class LocalTime(_FromInstant):
    """The time of an instant in the site's zone, in the language's short form (``10:30 AM``, ``10:30``)."""

    kind: Literal["local_time"]

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        return local_time_text(self._local_moment(resource, ctx), ctx.language)


def local_date_text(moment: datetime, language: str) -> str:
    """A local moment's date written out in ``language`` (the one form every message uses)."""
    return format_date(moment.date(), format="full", locale=_locale(language)).translate(_ODD_SPACES)


def local_time_text(moment: datetime, language: str) -> str:
    """A local moment's time in ``language``'s short form."""
    return format_time(moment.time(), format="short", locale=_locale(language)).translate(_ODD_SPACES)


class SiteLabel(_Param):
    """The configured public label of the first Location the resource names, else the default label.

    Never ``Location.name`` or a reference's ``display``: those are the EHR's words (often a ward
    or clinic that reveals a condition), not a label the hospital chose to publish.
    """

    kind: Literal["site_label"]

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        for reference in _location_references(resource):
            label = ctx.site_labels.get(reference)
            if label:
                return label
        return ctx.default_site_label


class NewSiteLabel(_Param):
    """The public label of the site an operator's "moved" notice sends patients to
    (``bridge notices site-closure --new-site``), checked against the configured labels before any
    message is built; never a text taken from the EHR."""

    kind: Literal["new_site_label"]

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        if not ctx.new_site_label or ctx.new_site_label not in ctx.public_labels:
            raise ValueProblem("no configured site label was given for the new site")
        return ctx.new_site_label


class LinkToken(_Param):
    """The URL suffix of a signed portal link, minted by the caller for ``target``."""

    kind: Literal["link_token"]
    target: LinkTarget

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        return _token(ctx.mint_link(self.target), "link")


class ActionToken(_Param):
    """A quick-reply payload the caller minted for ``action``; a tap brings it back to us."""

    kind: Literal["action_token"]
    action: Action

    def value(self, resource: Mapping[str, Any], ctx: RenderContext) -> str:
        return _token(ctx.mint_action(self.action), "action")


BodyParam = Annotated[LocalDate | LocalTime | SiteLabel | NewSiteLabel, Field(discriminator="kind")]
ButtonParam = Annotated[LinkToken | ActionToken, Field(discriminator="kind")]
BODY_KINDS: tuple[str, ...] = ("local_date", "local_time", "site_label", "new_site_label")
BUTTON_KINDS: tuple[str, ...] = ("link_token", "action_token")


def _token(token: object, what: str) -> str:
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise ValueProblem(
            f"the {what} minter returned something that is not an opaque token "
            "(8-512 characters from A-Z a-z 0-9 . _ ~ -)"
        )
    return token


def _location_references(resource: Mapping[str, Any]) -> Iterator[str]:
    """Location references in document order: participants' actors, then a ``location`` element."""
    candidates: list[Any] = [p.get("actor") for p in _dicts(resource.get("participant"))]
    location = resource.get("location")
    for item in location if isinstance(location, list) else [location]:
        if isinstance(item, dict):
            candidates.append(item.get("location", item))  # Encounter.location[].location or a Reference
    for candidate in candidates:
        if isinstance(candidate, dict) and isinstance(candidate.get("reference"), str):
            match = _LOCATION_REF.search(candidate["reference"])
            if match:
                yield match.group(1)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@lru_cache(maxsize=64)
def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language)
    except (UnknownLocaleError, ValueError) as exc:
        raise ValueProblem(f"language {language!r} has no locale data for dates and times") from exc
