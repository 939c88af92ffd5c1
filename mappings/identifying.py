"""Collecting the identifying strings of a resource, its patient and related resources.

Used by :mod:`mappings.phi_guard`. The walk is generic on purpose: every string in the resource
counts as identifying unless its key is known to be structural (status codes, systems, URLs,
resource types, ``meta``, base64 ``data``, the XHTML narrative). Listing PHI fields one by one
would miss the next profile's extension; listing the harmless ones errs on the side of blocking.

On top of the raw strings it adds the *derived* forms a leak would take: full names in several
orders (https://hl7.org/fhir/R4/datatypes.html#HumanName), phone digits without separators or
trunk prefix (#ContactPoint), e-mail local parts, joined address lines (#Address), birth dates
written out by babel in common locales, and the id part of references (#Reference).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import phonenumbers
from babel.dates import format_date

# String values under these keys say how the data is structured, not who it is about (``data`` is
# base64 content and ``div`` the XHTML narrative: both are prose or bytes, never a short string a
# message could carry, and their names and codes are collected from the structured fields anyway).
SKIP_LEAVES = frozenset({
    "resourceType", "status", "use", "system", "url", "version", "mode", "language", "contentType",
    "div", "data", "hash", "gender", "required", "fullUrl", "type", "precision", "comparator",
})
SKIP_SUBTREES = frozenset({"meta"})  # version ids, profiles, security tags: about the record, not the person
# The nearest of these keys (innermost first) names the category reported by PhiLeakError.
_CATEGORY_BY_KEY: Mapping[str, str] = {
    "birthDate": "birth_date", "identifier": "identifier", "telecom": "telecom", "address": "address",
    "name": "name", "family": "name", "given": "name", "prefix": "name", "suffix": "name",
    "coding": "code", "code": "code", "category": "code", "serviceType": "code", "serviceCategory": "code",
    "specialty": "code", "appointmentType": "code", "reasonCode": "code", "conclusionCode": "code",
    "interpretation": "code", "valueCodeableConcept": "code",
    "conclusion": "report_text", "presentedForm": "report_text", "valueString": "result",
    "note": "note", "comment": "note", "description": "note", "patientInstruction": "note",
    "reference": "record_id", "id": "record_id",
}
# Birth dates are also looked for as babel writes them in these locales (full/long/medium/short).
BIRTH_DATE_LOCALES = ("en_US", "en_GB", "es", "es_MX", "pt_BR", "fr", "de", "nl")
PHONE_DIGITS_MIN = 7
_ID_PART = re.compile(r"([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def normalise(text: str) -> str:
    """Case-folded, accent-free, NFKC, single-spaced: the form both sides are compared in."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", stripped).casefold()).strip()


class Collector:
    """Accumulates normalised identifying strings with the category of the first place each was seen."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}

    def add(self, value: str, category: str) -> None:
        text = normalise(value)
        if text:
            self.found.setdefault(text, category)
        digits = re.sub(r"\D", "", text)
        if len(digits) >= PHONE_DIGITS_MIN and digits != text:
            self.found.setdefault(digits, category)

    def walk(self, node: Any, keys: tuple[str, ...] = ()) -> None:
        if isinstance(node, dict):
            self._derived(node, keys)
            for key, value in node.items():
                if key not in SKIP_SUBTREES:
                    self.walk(value, (*keys, key))
        elif isinstance(node, list):
            for item in node:
                self.walk(item, keys)
        elif isinstance(node, str):
            leaf = keys[-1] if keys else ""
            if leaf in SKIP_LEAVES:
                return
            if leaf == "birthDate":
                self._birth_date(node)
            elif leaf == "reference":
                match = _ID_PART.search(node)
                if match:
                    self.add(match.group(1), "record_id")
            self.add(node, _category(keys))

    def _derived(self, node: Mapping[str, Any], keys: tuple[str, ...]) -> None:
        if "family" in node or "given" in node:
            self._human_name(node)
        if node.get("system") in ("phone", "sms", "fax", "pager", "other") and isinstance(node.get("value"), str):
            self._phone(node["value"])
        if node.get("system") == "email" and isinstance(node.get("value"), str):
            self.add(node["value"].split("@", 1)[0], "telecom")
        if keys and keys[-1] == "address":
            lines = _strings(node.get("line"))
            city = node.get("city") if isinstance(node.get("city"), str) else None
            for joined in (", ".join(lines), " ".join(lines), ", ".join([*lines, city] if city else [])):
                if joined:
                    self.add(joined, "address")

    def _human_name(self, name: Mapping[str, Any]) -> None:
        given = _strings(name.get("given"))
        family = name.get("family") if isinstance(name.get("family"), str) else None
        if not (given and family):
            return
        all_given = " ".join(given)
        forms = [f"{all_given} {family}", f"{family}, {all_given}", f"{family} {all_given}",
                 f"{given[0]} {family}", f"{family}, {given[0]}", f"{given[0][:1]}. {family}",
                 " ".join([*_strings(name.get("prefix")), all_given, family])]
        for form in forms:
            self.add(form, "name")

    def _phone(self, value: str) -> None:
        digits = re.sub(r"\D", "", value)
        if digits.startswith("0") and len(digits) - 1 >= PHONE_DIGITS_MIN:
            self.add(digits[1:], "telecom")  # a trunk prefix disappears in international form
        if value.strip().startswith("+"):
            try:
                number = phonenumbers.parse(value, None)
                self.add(str(number.national_number), "telecom")
            except phonenumbers.NumberParseException:
                pass

    def _birth_date(self, value: str) -> None:
        try:
            born = date.fromisoformat(value)
        except ValueError:
            return  # a partial date (year, year-month) adds nothing beyond its raw form
        for locale in BIRTH_DATE_LOCALES:
            for width in ("full", "long", "medium", "short"):
                self.add(format_date(born, format=width, locale=locale), "birth_date")
        d, m, y = born.day, born.month, born.year
        for numeric in (f"{m:02}/{d:02}/{y}", f"{d:02}/{m:02}/{y}", f"{d:02}.{m:02}.{y}", f"{d:02}-{m:02}-{y}",
                        f"{y}/{m:02}/{d:02}", f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{d}.{m}.{y}"):
            self.add(numeric, "birth_date")


def collect(resources: Iterable[Mapping[str, Any] | None]) -> dict[str, str]:
    collector = Collector()
    for resource in resources:
        if resource:
            collector.walk(resource)
    return collector.found


def _category(keys: tuple[str, ...]) -> str:
    for key in reversed(keys):
        if key in _CATEGORY_BY_KEY:
            return _CATEGORY_BY_KEY[key]
    return "display" if keys and keys[-1] == "display" else "other"


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
