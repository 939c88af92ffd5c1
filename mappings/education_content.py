"""Health-education topics and their content series (``mappings/education/*.yaml``).

General wellness content a hospital approved, sent only to patients who subscribed to its topic (the
service's planner, :mod:`adapter.education.planner`). Approved like the front desk's answers
(:mod:`mappings.knowledge`): a topic and each of its items have an ``id``, a ``version`` (raised at
every change), who approved it (``approved_by``, a role or committee) and until when (``valid_until``:
past it, an item is not sent). Per language (the file's ``languages``) a topic has a list-row
``title``, the ``keyword`` of "STOP <keyword>" and a row ``description``; an item has its text.
``every_days`` spaces a topic's items. ``texts`` holds the chat's words about topics per language.

Every ``*.yaml`` of the folder is read (one ``languages`` and ``texts`` shared: the first file's, the
others may add topics). Loading checks the structure and raises :class:`EducationError` with every
problem, saying where; :mod:`mappings.education_check` checks the content (duplicates, expiry, PHI-looking
or sensitive text, lengths, languages).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from mappings.approved import Approved, ContentError

DEFAULT_EDUCATION_DIR = Path(__file__).parent / "education"
TEXT_KEYS = ("menu_row", "prompt", "button", "subscribe", "subscribed_row", "subscribed", "stopped", "none",
             "opted_out")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_TOPIC_KEYS = frozenset({"id", "version", "approved_by", "valid_until", "every_days", "items"})
_ITEM_KEYS = frozenset({"id", "version", "approved_by", "valid_until"})


class EducationError(ContentError):
    """The education content cannot be used; ``problems`` lists each reason, saying where."""


@dataclass(frozen=True)
class TopicWords:
    title: str
    keyword: str
    description: str


@dataclass(frozen=True)
class Item(Approved):
    id: str
    version: int
    approved_by: str
    valid_until: date
    texts: Mapping[str, str]


@dataclass(frozen=True)
class Topic(Approved):
    id: str
    version: int
    approved_by: str
    valid_until: date
    every_days: int
    words: Mapping[str, TopicWords]
    items: tuple[Item, ...]

    def title(self, language: str, default_language: str) -> str:
        words = self.words.get(language) or self.words.get(default_language)
        return words.title if words else self.id


@dataclass(frozen=True)
class EducationContent:
    languages: tuple[str, ...]
    topics: tuple[Topic, ...]
    texts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def topic(self, topic_id: str) -> Topic | None:
        return next((t for t in self.topics if t.id == topic_id), None)

    def text(self, key: str, language: str, default_language: str, /, **values: str) -> str:
        """The chat text ``key`` in ``language`` (else the default, else the first language), filled."""
        for candidate in (language, default_language, *self.languages):
            found = self.texts.get(candidate, {}).get(key)
            if found is not None:
                return found.format(**values)
        return key

    @classmethod
    def load(cls, path: Path = DEFAULT_EDUCATION_DIR) -> EducationContent:
        """One file, or every ``*.yaml`` of a folder (in name order)."""
        files = sorted(Path(path).glob("*.yaml")) if Path(path).is_dir() else [Path(path)]
        if not files:
            raise EducationError(path, ["no *.yaml file"])
        problems: list[str] = []
        languages: tuple[str, ...] = ()
        texts: dict[str, dict[str, str]] = {}
        topics: list[Topic] = []
        for file in files:
            try:
                document = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise EducationError(file, [f"cannot read the file: {exc}"]) from exc
            where = file.name if len(files) > 1 else ""
            parsed = _parse(document, languages, _Problems(problems, where))
            if parsed is not None:
                languages = languages or parsed[0]
                for language, words in parsed[1].items():
                    texts.setdefault(language, words)
                topics += parsed[2]
        if problems or not languages:
            raise EducationError(path, problems or ["empty content"])
        return cls(languages, tuple(topics), texts)


@dataclass
class _Problems:
    found: list[str]
    prefix: str

    def add(self, message: str) -> None:
        self.found.append(f"{self.prefix}: {message}" if self.prefix else message)


def _parse(document: Any, known: tuple[str, ...], problems: _Problems
           ) -> tuple[tuple[str, ...], dict[str, dict[str, str]], list[Topic]] | None:
    if not isinstance(document, dict):
        problems.add("expected a mapping with languages, texts and topics")
        return None
    languages = document.get("languages", list(known) or None)
    if not isinstance(languages, list) or not languages or not all(isinstance(x, str) for x in languages):
        problems.add("languages: a list of language codes is required, e.g. [en_US, es, zh_CN]")
        return None
    texts = _texts(document.get("texts"), languages, problems) if "texts" in document or not known else {}
    raw_topics = document.get("topics") or []
    if not isinstance(raw_topics, list):
        problems.add("topics: must be a list")
        return None
    topics = [t for i, raw in enumerate(raw_topics) if (t := _topic(i, raw, languages, problems)) is not None]
    return tuple(languages), texts, topics


def _texts(raw: Any, languages: list[str], problems: _Problems) -> dict[str, dict[str, str]]:
    if not isinstance(raw, dict):
        problems.add(f"texts: per language, the chat's words {list(TEXT_KEYS)}")
        return {}
    result: dict[str, dict[str, str]] = {}
    for language in languages:
        words = raw.get(language)
        if not isinstance(words, dict):
            problems.add(f"texts.{language}: missing")
            continue
        missing = [key for key in TEXT_KEYS if not isinstance(words.get(key), str) or not words[key].strip()]
        if missing:
            problems.add(f"texts.{language}: missing {missing}")
        result[language] = {str(k): " ".join(str(v).split()) for k, v in words.items()}
    return result


def _approval(where: str, raw: dict[str, Any], problems: _Problems) -> bool:
    """Checks id-version-approval fields shared by topics and items; True when they are usable."""
    version, valid_until, approved = raw.get("version"), raw.get("valid_until"), raw.get("approved_by")
    ok = True
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.add(f"{where}: version must be a whole number from 1, raised at every change")
        ok = False
    if not isinstance(valid_until, date) or isinstance(valid_until, datetime):
        problems.add(f"{where}: valid_until must be a date, e.g. 2027-06-30")
        ok = False
    if not isinstance(approved, str) or not approved.strip():
        problems.add(f"{where}: approved_by must say who approved it (a role or committee)")
        ok = False
    return ok


def _topic(index: int, raw: Any, languages: list[str], problems: _Problems) -> Topic | None:
    where = f"topics[{index}]"
    if not isinstance(raw, dict) or not _ID.match(str(raw.get("id", ""))):
        problems.add(f"{where}: needs an id (lower-case letters, digits, - or _)")
        return None
    where = f"{where} {raw['id']}"
    start = len(problems.found)
    usable = _approval(where, raw, problems)
    every = raw.get("every_days", 7)
    if not isinstance(every, int) or isinstance(every, bool) or not 1 <= every <= 365:
        problems.add(f"{where}: every_days must be a whole number of days from 1 to 365")
    words: dict[str, TopicWords] = {}
    for language in languages:
        spec = raw.get(language)
        if spec is None:
            continue  # reported by the check as a missing language
        if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) and spec[k].strip()
                                                 for k in ("title", "keyword", "description")):
            problems.add(f"{where}: {language} needs title, keyword and description")
            continue
        words[language] = TopicWords(*(" ".join(str(spec[k]).split()) for k in ("title", "keyword", "description")))
    unknown = sorted(k for k in raw if k not in languages and k not in _TOPIC_KEYS)
    if unknown:
        problems.add(f"{where}: unknown keys {unknown} (languages are {languages})")
    raw_items = raw.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        problems.add(f"{where}: items: an ordered list of the series' items is required")
        raw_items = []
    items = [i for n, item in enumerate(raw_items) if (i := _item(f"{where} items[{n}]", item, languages,
                                                                  problems)) is not None]
    if len(problems.found) > start or not usable:
        return None
    return Topic(str(raw["id"]), raw["version"], " ".join(str(raw["approved_by"]).split()), raw["valid_until"],
                 every, words, tuple(items))


def _item(where: str, raw: Any, languages: list[str], problems: _Problems) -> Item | None:
    if not isinstance(raw, dict) or not _ID.match(str(raw.get("id", ""))):
        problems.add(f"{where}: needs an id (lower-case letters, digits, - or _)")
        return None
    where = f"{where} {raw['id']}"
    usable = _approval(where, raw, problems)
    texts: dict[str, str] = {}
    for language in languages:
        text = raw.get(language)
        if text is None:
            continue  # reported by the check as a missing language
        if not isinstance(text, str) or not text.strip():
            problems.add(f"{where}: {language} must be the item's text")
            continue
        # Folded to single spaces: a template parameter may hold no line break (Meta error 132018).
        texts[language] = " ".join(text.split())
    unknown = sorted(k for k in raw if k not in languages and k not in _ITEM_KEYS)
    if unknown:
        problems.add(f"{where}: unknown keys {unknown} (languages are {languages})")
    if not usable or unknown:
        return None
    return Item(str(raw["id"]), raw["version"], " ".join(str(raw["approved_by"]).split()), raw["valid_until"], texts)
