"""Keywords patients type and the service's replies, per language (``mappings/conversation.yaml``).

STOP and START follow the carrier convention (CTIA short-code handbook, and WhatsApp's Business
Messaging Policy: "respect all requests … to block, discontinue, or otherwise opt out"): the whole
message is the keyword. Meta's own "stop promotions" control covers marketing only, so opting out
of utility notifications is the business's job.

Two ways to read a message:

* :meth:`Conversation.classify` — every intent. Emergency phrases first, found *anywhere* in the
  message; then the whole-message keywords (stop, start, staff, yes, no, menu).
* :meth:`Conversation.intent` — STOP/START only (whole message), for callers that act on consent
  and must not mistake "yes" or "staff" for something else.

Replies come from :meth:`Conversation.text` (raw) or :meth:`Conversation.render` (placeholders
filled, the set of values checked against the text's ``{placeholders}``).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import yaml

DEFAULT_CONVERSATION_FILE = Path(__file__).parent / "conversation.yaml"
MAX_TEXT = 1024  # an interactive body's limit; a text body may be 4,096
MAX_BUTTON_TITLE = 20
MAX_ROW_TITLE = 24
BUTTON_TITLE_KEYS = frozenset({"menu_staff", "menu_stop", "yes_cancel", "no_keep", "slots_button", "menu_button",
                               "questions_button", "departments_button", "button_confirm", "button_reschedule",
                               "button_cancel", "helpful_yes", "helpful_no"})
LIST_ROW_KEYS = frozenset({"menu_appointments", "menu_questions", "menu_departments"})
REQUIRED_TEXTS = frozenset({"stopped", "started"})
_EDGE_NOISE = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)
_SPACES = re.compile(r"\s+")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc\u0060\u00b4]")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Intent = Literal["stop", "start", "staff", "emergency", "yes", "no", "menu"]
WholeMessageIntent = Literal["stop", "start", "staff", "yes", "no", "menu"]
CONSENT_INTENTS: frozenset[str] = frozenset({"stop", "start"})
_WHOLE_MESSAGE: tuple[WholeMessageIntent, ...] = get_args(WholeMessageIntent)
_REQUIRED_WORDS = frozenset({"stop", "start", "staff", "emergency"})


class ConversationError(ValueError):
    """The conversation file is missing a language's keywords or texts, or a text is malformed."""


def normalise(text: str) -> str:
    """Case-folded, NFKC, trimmed of surrounding punctuation/emoji, single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _EDGE_NOISE.sub("", folded.strip()))


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _keyword_key(text: str) -> str:
    """Whole-message lookup key: :func:`normalise`, accents dropped ("si" and "sí" are one key)."""
    return _strip_accents(normalise(text))


def _phrase_key(text: str) -> str:
    """Search form for emergency phrases: folded, no accents or apostrophes, words single-spaced."""
    folded = _strip_accents(unicodedata.normalize("NFKC", text).casefold())
    return _NOT_WORD.sub(" ", _APOSTROPHES.sub("", folded)).strip()


def _is_alphabetic(char: str) -> bool:
    """Scripts written with spaces between words (Latin, Greek, Cyrillic, …), where a boundary matters."""
    return char.isalnum() and not unicodedata.name(char, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def placeholders(text: str) -> frozenset[str]:
    """The ``{name}`` fields of ``text``; :class:`ConversationError` for anything but a plain name."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConversationError(f"unbalanced braces: {exc}") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _IDENTIFIER.match(name) or spec or conversion:
            raise ConversationError(f"placeholder {{{name}}} must be a plain name, without format or conversion")
        names.add(name)
    return frozenset(names)


@dataclass(frozen=True)
class Match:
    intent: Intent
    language: str


class Conversation:
    def __init__(self, languages: dict[str, dict[str, object]]) -> None:
        self._keywords: dict[str, Match] = {}
        self._keyword_languages: dict[str, set[str]] = {}
        self._emergency: dict[str, Match] = {}
        self._texts: dict[str, dict[str, str]] = {}
        for language, spec in languages.items():
            self._texts[language] = _read_texts(language, spec.get("texts"))
            for intent in _WHOLE_MESSAGE:
                for word in _words(language, spec, intent):
                    self._add_keyword(_keyword_key(word), Match(intent, language))
            for phrase in _words(language, spec, "emergency"):
                key = _phrase_key(phrase)
                if key:
                    self._emergency.setdefault(key, Match("emergency", language))
        self._emergency_pattern = _phrase_pattern(self._emergency) if self._emergency else None

    def _add_keyword(self, key: str, match: Match) -> None:
        if not key:
            return
        owner = self._keywords.setdefault(key, match)  # the first language listing a word owns it
        self._keyword_languages.setdefault(key, set()).add(match.language)
        if owner.intent != match.intent:
            raise ConversationError(f"{match.language}: {key!r} is both a {owner.intent} word ({owner.language}) "
                                    f"and a {match.intent} word")

    @classmethod
    def load(cls, path: Path = DEFAULT_CONVERSATION_FILE) -> Conversation:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConversationError(f"cannot read {path}: {exc}") from exc
        languages = document.get("languages") if isinstance(document, dict) else None
        if not isinstance(languages, dict) or not languages:
            raise ConversationError(f"{path}: expected a 'languages' mapping")
        return cls(languages)

    def intent(self, text: str | None) -> Match | None:
        """STOP or START when it is the whole message; ``None`` for everything else (see :meth:`classify`)."""
        match = self._keywords.get(_keyword_key(text)) if text else None
        return match if match is not None and match.intent in CONSENT_INTENTS else None

    def classify(self, text: str | None) -> Match | None:
        """An emergency phrase anywhere in ``text`` wins; else a whole-message keyword; else ``None``."""
        if not text:
            return None
        if self._emergency_pattern is not None:
            found = self._emergency_pattern.search(_phrase_key(text))
            if found:
                return self._emergency[found.group(0)]
        return self._keywords.get(_keyword_key(text))

    def languages_of(self, text: str | None) -> frozenset[str]:
        """Every language whose whole-message keywords include ``text`` ("no" is English and Spanish)."""
        return frozenset(self._keyword_languages.get(_keyword_key(text), ())) if text else frozenset()

    def text(self, key: str, language: str, default_language: str) -> tuple[str, str]:
        """The reply ``key`` in ``language`` (or the default language): (text, language used)."""
        for candidate in (language, language.split("_")[0], default_language):
            texts = self._texts.get(candidate)
            if texts and key in texts:
                return texts[key], candidate
        raise ConversationError(f"no text {key!r} for {language} or {default_language}")

    def render(self, key: str, language: str, default_language: str, /, **values: str) -> tuple[str, str]:
        """:meth:`text` with its ``{placeholders}`` filled; the values must be exactly those it names."""
        text, used = self.text(key, language, default_language)
        expected = placeholders(text)
        if set(values) != expected:
            missing, unknown = sorted(expected - set(values)), sorted(set(values) - expected)
            raise ConversationError(f"text {key!r} ({used}): missing values {missing}, unknown values {unknown}")
        return text.format(**{name: str(value) for name, value in values.items()}), used

    @property
    def languages(self) -> list[str]:
        return sorted(self._texts)

    def text_keys(self, language: str) -> frozenset[str]:
        return frozenset(self._texts.get(language, {}))


def _read_texts(language: str, texts: object) -> dict[str, str]:
    if not isinstance(texts, dict) or not texts.keys() >= REQUIRED_TEXTS:
        raise ConversationError(f"{language}: texts.stopped and texts.started are required")
    result = {str(k): " ".join(str(v).split()) for k, v in texts.items()}
    for key, value in result.items():
        try:
            placeholders(value)
        except ConversationError as exc:
            raise ConversationError(f"{language}: texts.{key}: {exc}") from exc
        limit = MAX_BUTTON_TITLE if key in BUTTON_TITLE_KEYS else MAX_ROW_TITLE if key in LIST_ROW_KEYS else MAX_TEXT
        if not 1 <= len(value) <= limit:
            raise ConversationError(f"{language}: texts.{key} must be 1 to {limit} characters, not {len(value)}")
    return result


def _words(language: str, spec: dict[str, object], intent: str) -> list[str]:
    words = spec.get(f"{intent}_words")
    if words is None and intent not in _REQUIRED_WORDS:
        return []
    if not isinstance(words, list) or not words:
        raise ConversationError(f"{language}: {intent}_words must be a non-empty list")
    if not all(isinstance(word, str) for word in words):  # bare yes/no/on/off are YAML 1.1 booleans
        raise ConversationError(f"{language}: {intent}_words must be strings (quote yes, no, y, n, on, off)")
    return words


def _phrase_pattern(phrases: dict[str, Match]) -> re.Pattern[str]:
    """One alternation, longest phrase first; word boundaries only at alphabetic ends."""
    parts = []
    for phrase in sorted(phrases, key=len, reverse=True):
        head = r"(?<!\w)" if _is_alphabetic(phrase[0]) else ""
        tail = r"(?!\w)" if _is_alphabetic(phrase[-1]) else ""
        parts.append(f"{head}{re.escape(phrase)}{tail}")
    return re.compile("|".join(parts))
