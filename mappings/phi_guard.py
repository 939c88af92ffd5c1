"""The PHI guard: the last step before a payload leaves (DESIGN.md, "No PHI in chat").

Rendering only ever produces allow-listed values, so the guard is a second, independent line: it
collects what identifies the patient and the record (:func:`identifying_strings`) and refuses any
outgoing string that contains one (:func:`check`). It knows nothing about rules or kinds, so a bug
in either cannot switch it off.

Matching is case-, accent- and whitespace-insensitive and respects word boundaries, so a random
token that happens to contain ``ann`` inside ``xAnnq`` is not a name. Digit strings of at least
7 digits (phones, MRNs, SSNs) are also compared with separators removed, so ``(201) 555-0123``
and ``+12015550123`` both match ``201-555-0123``.

What is deliberately *not* matched, and why:

- Strings shorter than :data:`MIN_LENGTH` (4) characters: ``Li``, ``Ng``, ``CBC``, ``MR`` would
  trigger on random tokens (at 3 characters, case-folded base64 tokens hit a given word about once
  in 10⁴ messages); on their own they identify nobody.
- Strings without letters and with fewer than :data:`MIN_NUMERIC_DIGITS` (6) digits: ``2026``,
  ``10``, ``1111`` collide with the years, days and times a message is allowed to carry.
- Strings made only of the message language's month, day and AM/PM words (a patient named
  ``May`` or ``June``): the date is allowed content, and its words cannot be told apart from a name.
- An outgoing value that *is* one of the hospital's public site labels (``public=``, compared
  normalised and whole): a Location displayed as ``South Wing`` must not block the label
  ``South Wing`` the hospital chose to publish. A value that merely *contains* a label is checked
  in full, so a label can never shield the rest of a string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError

from mappings.errors import PhiLeakError
from mappings.identifying import PHONE_DIGITS_MIN, collect, normalise

__all__ = ["MIN_LENGTH", "MIN_NUMERIC_DIGITS", "IdentifyingStrings", "PhiLeakError", "check",
           "identifying_strings", "normalise"]

MIN_LENGTH = 4
MIN_NUMERIC_DIGITS = 6
_DIGIT_RUN = re.compile(r"\d(?:[\d\s().+\-/]*\d)?")
_WORD = re.compile(r"\w+")
_STRUCTURAL_LEAVES = frozenset({"type", "sub_type", "index"})
_STRUCTURAL_PATHS = frozenset({"name", "language.code"})  # the template's own name and language


class IdentifyingStrings(frozenset[str]):
    """A frozenset of normalised identifying strings that also remembers each one's category."""

    _categories: dict[str, str]

    def __new__(cls, categories: Mapping[str, str]) -> IdentifyingStrings:
        instance = super().__new__(cls, categories)
        instance._categories = dict(categories)
        return instance

    def category_of(self, text: str) -> str:
        return self._categories.get(text, "other")


def identifying_strings(
    resource: Mapping[str, Any], patient: Mapping[str, Any] | None, related: Iterable[Mapping[str, Any]] = ()
) -> IdentifyingStrings:
    """Every identifying string of ``resource``, ``patient`` and ``related`` (practitioners,
    locations, … the caller fetched), normalised; see :mod:`mappings.identifying` for what counts."""
    # The patient goes first so a string found in both is reported in the patient's category
    # (a participant's display of the patient's name is a ``name``, not just a ``display``).
    return IdentifyingStrings(collect([patient, resource, *related]))


def check(template_object: Mapping[str, Any], identifying: frozenset[str], *, public: Iterable[str] = ()) -> None:
    """Raises :class:`PhiLeakError` if any outgoing string of ``template_object`` contains an
    identifying string. An outgoing value equal to one of ``public`` (the site labels the hospital
    published, :attr:`RenderContext.public_labels`) is not checked."""
    language = template_object.get("language")
    code = language.get("code") if isinstance(language, Mapping) else None
    calendar = _calendar_words(code if isinstance(code, str) else "")
    candidates = sorted((s for s in identifying if _meaningful(s, calendar)), key=lambda s: (-len(s), s))
    published = {normalise(label) for label in public}
    for path, value in _outgoing(template_object, ""):
        text = normalise(value)
        if text in published:
            continue
        runs = [re.sub(r"\D", "", run) for run in _DIGIT_RUN.findall(text)]
        for candidate in candidates:
            if _occurs(candidate, text, runs):
                raise PhiLeakError(path, _category(identifying, candidate))


def _category(identifying: frozenset[str], text: str) -> str:
    return identifying.category_of(text) if isinstance(identifying, IdentifyingStrings) else "other"


def _meaningful(text: str, calendar: frozenset[str]) -> bool:
    if len(text) < MIN_LENGTH:
        return False
    if not any(char.isalpha() for char in text):
        return sum(char.isdigit() for char in text) >= MIN_NUMERIC_DIGITS
    if any(char.isdigit() for char in text):
        return True
    return not set(_WORD.findall(text)) <= calendar


def _occurs(candidate: str, text: str, runs: list[str]) -> bool:
    if candidate.isdigit() and len(candidate) >= PHONE_DIGITS_MIN and any(candidate in run for run in runs):
        return True
    return candidate in text and _bounded(candidate).search(text) is not None


@lru_cache(maxsize=4096)
def _bounded(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)")


def _outgoing(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if child in _STRUCTURAL_PATHS or (key in _STRUCTURAL_LEAVES and isinstance(value, str | int)):
                continue
            yield from _outgoing(value, child)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _outgoing(item, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


@lru_cache(maxsize=32)
def _calendar_words(language: str) -> frozenset[str]:
    """Month, weekday and day-period words of the message language, normalised."""
    try:
        locale = Locale.parse(language)
    except (UnknownLocaleError, ValueError, TypeError):
        return frozenset()
    names: list[str] = []
    for context in ("format", "stand-alone"):
        for width in ("wide", "abbreviated"):
            names += locale.months[context][width].values()
            names += locale.days[context][width].values()
            names += locale.day_periods[context][width].values() if width in locale.day_periods[context] else []
    return frozenset(word for name in names for word in _WORD.findall(normalise(name)))
