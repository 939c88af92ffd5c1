"""The hospital's approved answers and its departments (``mappings/knowledge/front_desk.yaml``).

The file is the hospital's to edit; the bot answers only with what it holds, verbatim. Each entry
has an ``id``, a ``version`` (raised at every change, recorded with each answer served), the
``department`` it belongs to, who approved it (``approved_by``, a role or committee, never a
patient) and until when (``valid_until``, an ISO date: an entry past it is not served). Per language
(the file's ``languages``, e.g. ``en_US``, ``es``, ``zh_CN``) an entry has a list-row ``title``, the
question ``variants`` patients might write and the ``answer``.

Departments have an ``owner`` (the FHIR reference a hand-off Task is assigned to, e.g.
``Organization/…`` or ``HealthcareService/…``), opening hours in their own time zone and the
usual wait told to patients while open.

``synonyms`` (per language: a canonical word → the words patients use instead) and ``ignore_words``
(per language: words that carry no meaning for matching) drive :mod:`mappings.knowledge_match`.

Loading checks the structure and raises :class:`KnowledgeError` with every problem, each naming
where it is (``entries[2] clinic-hours: es.answer: …``); :mod:`mappings.knowledge_check` checks the
content (duplicates, expiry, sensitive requests, lengths, missing languages).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from mappings.approved import Approved, ContentError

DEFAULT_KNOWLEDGE_FILE = Path(__file__).parent / "knowledge" / "front_desk.yaml"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
_OWNER = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


class KnowledgeError(ContentError):
    """The knowledge file cannot be used; ``problems`` lists each reason, saying where."""


@dataclass(frozen=True)
class Hours:
    """Opening hours in a time zone: open from ``opens`` to ``closes`` on ``workdays`` (Monday = 0)."""

    zone: ZoneInfo
    opens: time
    closes: time
    workdays: frozenset[int]

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        return local.weekday() in self.workdays and self.opens <= local.time() < self.closes

    def reply_by(self, now: datetime) -> tuple[Literal["today", "next_day"], datetime]:
        """When someone will answer: ("today", closing time) on a working day before closing, else
        ("next_day", the next working day's opening), local times."""
        local = now.astimezone(self.zone)
        if local.weekday() in self.workdays and local.time() < self.closes:
            return "today", local.replace(hour=self.closes.hour, minute=self.closes.minute, second=0, microsecond=0)
        day = local + timedelta(days=1)
        while day.weekday() not in self.workdays:
            day += timedelta(days=1)
        return "next_day", day.replace(hour=self.opens.hour, minute=self.opens.minute, second=0, microsecond=0)


@dataclass(frozen=True)
class Department:
    id: str
    owner: str
    hours: Hours
    wait_minutes: int
    names: Mapping[str, str]

    def name(self, language: str, default_language: str) -> str:
        return self.names.get(language) or self.names.get(default_language) or self.id


@dataclass(frozen=True)
class Localised:
    title: str
    variants: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Entry(Approved):
    id: str
    version: int
    department: str | None
    approved_by: str
    valid_until: date
    texts: Mapping[str, Localised]


@dataclass(frozen=True)
class KnowledgeBase:
    languages: tuple[str, ...]
    entries: tuple[Entry, ...]
    departments: tuple[Department, ...]
    synonyms: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    ignore_words: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def entry(self, entry_id: str) -> Entry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def department(self, department_id: str) -> Department | None:
        return next((d for d in self.departments if d.id == department_id), None)

    @classmethod
    def load(cls, path: Path = DEFAULT_KNOWLEDGE_FILE) -> KnowledgeBase:
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise KnowledgeError(path, [f"cannot read the file: {exc}"]) from exc
        problems: list[str] = []
        base = _parse(document, problems)
        if problems or base is None:
            raise KnowledgeError(path, problems or ["empty file"])
        return base


def _parse(document: Any, problems: list[str]) -> KnowledgeBase | None:
    if not isinstance(document, dict):
        problems.append("expected a mapping with languages, departments and entries")
        return None
    languages = document.get("languages")
    if not isinstance(languages, list) or not languages or not all(isinstance(x, str) for x in languages):
        problems.append("languages: a list of language codes is required, e.g. [en_US, es, zh_CN]")
        return None
    departments = [d for i, raw in enumerate(_list(document, "departments", problems))
                   if (d := _department(i, raw, problems)) is not None]
    entries = [e for i, raw in enumerate(_list(document, "entries", problems))
               if (e := _entry(i, raw, languages, problems)) is not None]
    return KnowledgeBase(tuple(languages), tuple(entries), tuple(departments),
                         _synonyms(document.get("synonyms"), problems), _ignore(document.get("ignore_words"), problems))


def _list(document: dict[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = document.get(key) or []
    if not isinstance(value, list):
        problems.append(f"{key}: must be a list")
        return []
    return value


def _department(index: int, raw: Any, problems: list[str]) -> Department | None:
    where = f"departments[{index}]"
    if not isinstance(raw, dict) or not _ID.match(str(raw.get("id", ""))):
        problems.append(f"{where}: needs an id (lower-case letters, digits, - or _)")
        return None
    where = f"{where} {raw['id']}"
    owner, hours, zone_name = str(raw.get("owner", "")), str(raw.get("hours", "")), str(raw.get("time_zone", ""))
    days, wait, names = raw.get("days", [0, 1, 2, 3, 4]), raw.get("wait_minutes", 60), raw.get("name")
    start = len(problems)
    if not _OWNER.match(owner):
        problems.append(f"{where}: owner must be a FHIR reference such as Organization/front-desk")
    if not _HOURS.match(hours):
        problems.append(f"{where}: hours must be HH:MM-HH:MM, e.g. 08:00-17:00")
    elif hours[:5] >= hours[6:]:
        problems.append(f"{where}: hours must close after they open")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: time_zone must be an IANA name such as America/New_York")
    if not isinstance(days, list) or not days or any(d not in range(7) for d in days):
        problems.append(f"{where}: days must list 0 (Monday) to 6 (Sunday)")
    if not isinstance(wait, int) or not 0 < wait <= 7 * 24 * 60:
        problems.append(f"{where}: wait_minutes must be a whole number of minutes")
    if not isinstance(names, dict) or not all(isinstance(v, str) and v.strip() for v in names.values()):
        problems.append(f"{where}: name must give the department's name per language")
    if len(problems) > start or not isinstance(names, dict):
        return None
    return Department(str(raw["id"]), owner, Hours(zone, time.fromisoformat(hours[:5]), time.fromisoformat(hours[6:]),
                                                   frozenset(days)),
                      wait, {str(k): " ".join(str(v).split()) for k, v in names.items()})


def _entry(index: int, raw: Any, languages: list[str], problems: list[str]) -> Entry | None:
    where = f"entries[{index}]"
    if not isinstance(raw, dict) or not _ID.match(str(raw.get("id", ""))):
        problems.append(f"{where}: needs an id (lower-case letters, digits, - or _)")
        return None
    where = f"{where} {raw['id']}"
    start = len(problems)
    version, valid_until, approved = raw.get("version"), raw.get("valid_until"), raw.get("approved_by")
    if not isinstance(version, int) or version < 1:
        problems.append(f"{where}: version must be a whole number from 1, raised at every change")
    if not isinstance(valid_until, date) or isinstance(valid_until, datetime):
        problems.append(f"{where}: valid_until must be a date, e.g. 2027-06-30")
    if not isinstance(approved, str) or not approved.strip():
        problems.append(f"{where}: approved_by must say who approved the answer (a role or committee)")
    department = raw.get("department")
    if department is not None and not isinstance(department, str):
        problems.append(f"{where}: department must be a department id")
    texts: dict[str, Localised] = {}
    for language in languages:
        spec = raw.get(language)
        if spec is None:
            continue  # reported by the check as a missing language
        localised = _localised(f"{where}: {language}", spec, problems)
        if localised is not None:
            texts[language] = localised
    unknown = sorted(k for k in raw if k not in languages and k not in _ENTRY_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown} (languages are {languages})")
    if len(problems) > start or not isinstance(version, int) or not isinstance(valid_until, date):
        return None
    return Entry(str(raw["id"]), version, department, " ".join(str(approved).split()), valid_until, texts)


_ENTRY_KEYS = frozenset({"id", "version", "department", "approved_by", "valid_until"})


def _localised(where: str, spec: Any, problems: list[str]) -> Localised | None:
    if not isinstance(spec, dict):
        problems.append(f"{where}: needs title, variants and answer")
        return None
    title, variants, answer = spec.get("title"), spec.get("variants"), spec.get("answer")
    start = len(problems)
    if not isinstance(title, str) or not title.strip():
        problems.append(f"{where}.title: the short question shown in lists is required")
    if not isinstance(variants, list) or not variants or not all(isinstance(v, str) and v.strip() for v in variants):
        problems.append(f"{where}.variants: a list of the ways patients ask this question is required")
    if not isinstance(answer, str) or not answer.strip():
        problems.append(f"{where}.answer: the approved answer text is required")
    if len(problems) > start or not isinstance(variants, list):
        return None
    # Folded like YAML's ">-": single spaces, so the verbatim answer is the text the hospital wrote.
    return Localised(" ".join(str(title).split()), tuple(" ".join(str(v).split()) for v in variants),
                     " ".join(str(answer).split()))


def _synonyms(raw: Any, problems: list[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        problems.append("synonyms: per language, a mapping of a word to the list of words meaning the same")
        return {}
    result: dict[str, dict[str, tuple[str, ...]]] = {}
    for language, words in raw.items():
        for canonical, others in words.items():
            if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
                problems.append(f"synonyms.{language}.{canonical}: must be a list of words (quote yes/no)")
                continue
            result.setdefault(str(language), {})[str(canonical)] = tuple(others)
    return result


def _ignore(raw: Any, problems: list[str]) -> dict[str, frozenset[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        problems.append("ignore_words: per language, a list of words that carry no meaning for matching")
        return {}
    return {str(language): frozenset(str(w) for w in words) for language, words in raw.items()}
