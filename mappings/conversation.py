"""Keywords patients type and the service's replies, per language (``mappings/conversation.yaml``).

STOP and START follow the carrier convention (CTIA short-code handbook, and WhatsApp's Business
Messaging Policy: "respect all requests … to block, discontinue, or otherwise opt out"): the whole
message is the keyword. Meta's own "stop promotions" control covers marketing only, so opting out
of utility notifications is the business's job.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

DEFAULT_CONVERSATION_FILE = Path(__file__).parent / "conversation.yaml"
_EDGE_NOISE = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)
_SPACES = re.compile(r"\s+")

Intent = Literal["stop", "start"]


class ConversationError(ValueError):
    """The conversation file is missing a language's keywords or texts."""


def normalise(text: str) -> str:
    """Case-folded, NFKC, trimmed of surrounding punctuation/emoji, single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _EDGE_NOISE.sub("", folded.strip()))


@dataclass(frozen=True)
class Match:
    intent: Intent
    language: str


class Conversation:
    def __init__(self, languages: dict[str, dict[str, object]]) -> None:
        self._keywords: dict[str, Match] = {}
        self._texts: dict[str, dict[str, str]] = {}
        for language, spec in languages.items():
            texts = spec.get("texts")
            if not isinstance(texts, dict) or not {"stopped", "started"} <= texts.keys():
                raise ConversationError(f"{language}: texts.stopped and texts.started are required")
            self._texts[language] = {str(k): " ".join(str(v).split()) for k, v in texts.items()}
            intents: tuple[Intent, ...] = ("stop", "start")
            for intent in intents:
                words = spec.get(f"{intent}_words")
                if not isinstance(words, list) or not words:
                    raise ConversationError(f"{language}: {intent}_words must be a non-empty list")
                for word in words:
                    # The first language listing a word owns it (English STOP also appears in Spanish).
                    self._keywords.setdefault(normalise(str(word)), Match(intent, language))

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
        return self._keywords.get(normalise(text)) if text else None

    def text(self, key: str, language: str, default_language: str) -> tuple[str, str]:
        """The reply ``key`` in ``language`` (or the default language): (text, language used)."""
        for candidate in (language, language.split("_")[0], default_language):
            texts = self._texts.get(candidate)
            if texts and key in texts:
                return texts[key], candidate
        raise ConversationError(f"no text {key!r} for {language} or {default_language}")

    @property
    def languages(self) -> list[str]:
        return sorted(self._texts)
