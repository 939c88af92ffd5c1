"""Finding the approved answer a patient's question asks for: deterministic and explainable.

No generative model and no tokenizer. Both the question and every variant of every entry are put in
one form (:func:`terms`):

1. NFKC, case-folded, accents removed, punctuation (ASCII and full-width) turned into spaces;
2. words split on spaces; a word written in a CJK script is split into its characters, so Chinese
   is compared character by character without a word segmenter;
3. the file's ``synonyms`` replaced by their canonical word (multi-word and CJK phrases included,
   longest first), then its ``ignore_words`` dropped.

The score (0-100) of a question against a variant is the mean of rapidfuzz's ``token_sort_ratio``
(word order ignored, every word counts: a one-word question does not fully match a long variant)
and ``token_set_ratio`` (the words they share, so a question with an extra "please" still scores
high). An entry's score is its best variant's; ties keep the file's order. The result says which
variant matched in which language, with what score, so an operator can see why.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from rapidfuzz import fuzz

from mappings.knowledge import Entry, KnowledgeBase

_PUNCTUATION = re.compile(r"[^\w\s]|_", re.UNICODE)
_CJK_PREFIXES = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")


def _is_cjk(char: str) -> bool:
    return unicodedata.name(char, "").startswith(_CJK_PREFIXES)


def fold(text: str) -> str:
    """NFKC, case-folded, without accents, punctuation as spaces, single spaces."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_PUNCTUATION.sub(" ", unicodedata.normalize("NFC", plain)).split())


def split(text: str) -> list[str]:
    """Words of folded text; CJK runs become one word per character."""
    words: list[str] = []
    for word in text.split():
        run = ""
        for char in word:
            if _is_cjk(char):
                if run:
                    words.append(run)
                    run = ""
                words.append(char)
            else:
                run += char
        if run:
            words.append(run)
    return words


class Normaliser:
    """The matching form of texts in one language: folded, split, synonyms replaced, noise dropped."""

    def __init__(self, synonyms: Mapping[str, Iterable[str]], ignore: Iterable[str]) -> None:
        phrases: list[tuple[list[str], str]] = []
        for canonical, others in synonyms.items():
            target = split(fold(canonical))
            for other in others:
                words = split(fold(other))
                if words and words != target:
                    phrases.append((words, " ".join(target)))
        self._phrases = sorted(phrases, key=lambda p: -len(p[0]))  # longest first
        self._ignore = frozenset(w for word in ignore for w in split(fold(word)))

    def terms(self, text: str) -> list[str]:
        words = split(fold(text))
        out: list[str] = []
        i = 0
        while i < len(words):
            for phrase, canonical in self._phrases:
                if words[i:i + len(phrase)] == phrase:
                    out.extend(canonical.split())
                    i += len(phrase)
                    break
            else:
                out.append(words[i])
                i += 1
        return [w for w in out if w not in self._ignore]


@dataclass(frozen=True)
class Candidate:
    """Why an entry was proposed: the variant that matched best, its language and the score."""

    entry: Entry
    language: str
    variant: str
    score: float


class Matcher:
    """Scores questions against the entries of a :class:`KnowledgeBase` valid on a given day."""

    def __init__(self, base: KnowledgeBase) -> None:
        self.base = base
        self._normalisers = {language: Normaliser(base.synonyms.get(language, {}),
                                                  base.ignore_words.get(language, frozenset()))
                             for language in base.languages}
        self._variants: list[tuple[Entry, str, str, str]] = [
            (entry, language, variant, " ".join(self._normalisers[language].terms(variant)))
            for entry in base.entries for language, texts in entry.texts.items() for variant in texts.variants]

    def rank(self, question: str, today: date, *, prefer: str | None = None, limit: int = 3) -> list[Candidate]:
        """The best ``limit`` entries (one candidate each, best variant), highest score first; an
        equal score prefers ``prefer`` (the patient's language), then the file's order."""
        asked = {language: " ".join(normaliser.terms(question)) for language, normaliser in self._normalisers.items()}
        best: dict[str, tuple[tuple[float, int, int], Candidate]] = {}
        for order, (entry, language, variant, form) in enumerate(self._variants):
            if not entry.valid_on(today) or not asked[language] or not form:
                continue
            score = round((fuzz.token_sort_ratio(asked[language], form)
                           + fuzz.token_set_ratio(asked[language], form)) / 2, 1)
            rank = (score, 1 if language == prefer else 0, -order)
            if entry.id not in best or rank > best[entry.id][0]:
                best[entry.id] = (rank, Candidate(entry, language, variant, score))
        ordered = sorted(best.values(), key=lambda item: (-item[0][0], -item[0][1], self._position(item[1].entry)))
        return [candidate for _, candidate in ordered[:limit]]

    def _position(self, entry: Entry) -> int:
        return self.base.entries.index(entry)

    def terms(self, language: str, text: str) -> list[str]:
        """The matching form of ``text`` (for explaining a match)."""
        return self._normalisers[language].terms(text)
