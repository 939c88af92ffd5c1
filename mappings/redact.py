"""Finds and removes secrets a patient should never send in chat: SSNs, payment card numbers, passwords.

DESIGN.md: "Never ask for social security numbers, card numbers or passwords in chat; if a patient
sends one, do not store it, and point them to the portal." Run :func:`redact` on inbound text before
it is stored or logged; if it returns kinds, answer with the ``sensitive`` text of
:mod:`mappings.conversation`.

Kinds:

* ``"ssn"`` — ``123-45-6789`` shaped, or nine digits (optionally ``3-2-4`` grouped by spaces or dashes)
  right after a cue ("SSN", "social security number", "seguro social", "社会安全号"). A bare nine-digit
  number is *not* flagged: order numbers and phone numbers look the same.
* ``"card"`` — 13 to 19 digits, optionally grouped by single spaces or dashes, that pass the Luhn check.
  Only whole groups are considered, so "4111 1111 1111 1111 12/29" still finds the card, and a
  25-digit reference number is not cut into a false card.
* ``"password"`` — a cue word (password, passcode, PIN, contraseña, clave, 密码, …) followed by a token.
  With a separator ("is", ":", "=", "es", "是") any token counts except a few everyday words ("my
  password is wrong"); without one the token must hold a digit or symbol ("password hunter2"). Only the
  token is removed: "my password is [removed]".

The matched values are never returned, logged or kept: only their kinds. All patterns are compiled
once and linear in the input.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["ssn", "card", "password"]
REMOVED = "[removed]"
_CARD_MIN, _CARD_MAX = 13, 19

_SSN_SHAPED = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_SSN_CUED = re.compile(
    r"(?:\bssn\b|\bsocial\s+security\b(?:\s+(?:number|num|no)\b\.?)?|\bseguro\s+social\b"
    r"|社会安全号码?|社会保障号码?|社保号码?)"
    r"[\s:#=.]{0,8}(?:(?:is|es|was|era|是)[\s:#=]{0,8})?"
    r"(?P<value>(?<!\d)\d{3}[ -]?\d{2}[ -]?\d{4}(?!\d))",
    re.IGNORECASE,
)
_DIGIT_RUN = re.compile(r"\d+(?:[ -]\d+)*")
_NOT_DIGIT = re.compile(r"\D")
_PASSWORD = re.compile(
    r"(?:(?<!\w)(?:password|passwd|passcode|pass\s+code|pin(?:\s+(?:code|number))?|contrase[ñn]a|clave)(?!\w)"
    r"|密码|口令)"
    r"(?P<sep>\s{0,8}(?::|=|\uff1a|\bis\b|\bwas\b|\bes\b|\bera\b|是|为)\s{0,8}|\s{1,8})"
    r"(?P<value>[^\s,\uff0c\u3002;\uff1b!\uff01?\uff1f\"'\u201c\u201d]+)",  # ASCII and full-width punctuation
    re.IGNORECASE,
)
_PLAIN_SEPARATOR = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")
_TYPED_SECRET = re.compile(r"[!-~]")  # a secret has at least one ASCII character: "什么" is not one
_HAS_DIGIT_OR_SYMBOL = re.compile(r"[^\W_]*[\d\W_]")
_EVERYDAY_WORDS = frozenset({
    "not", "wrong", "incorrect", "invalid", "expired", "locked", "blocked", "reset", "forgotten", "lost",
    "the", "my", "a", "an", "for", "to", "and", "or", "no", "correct", "right", "working", "ok", "okay",
    "fine", "required", "needed", "changed", "same", "still", "also", "too", "there",
    "la", "el", "mi", "para", "de", "incorrecta", "correcta", "olvidada", "bloqueada", "caducada",
    "cambiada", "es", "también",
})


def find_sensitive(text: str) -> list[Kind]:
    """The kinds found in ``text``, each once, in the order they first appear."""
    return _kinds(_spans(text))


def redact(text: str) -> tuple[str, list[Kind]]:
    """``text`` with each sensitive value replaced by ``[removed]``, and the kinds removed."""
    spans = _spans(text)
    if not spans:
        return text, []
    parts: list[str] = []
    position = 0
    for start, end, _ in spans:
        parts.append(text[position:start])
        parts.append(REMOVED)
        position = end
    parts.append(text[position:])
    return "".join(parts), _kinds(spans)


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _kinds(spans: list[tuple[int, int, Kind]]) -> list[Kind]:
    seen: list[Kind] = []
    for _, _, kind in sorted(spans):
        if kind not in seen:
            seen.append(kind)
    return seen


def _spans(text: str) -> list[tuple[int, int, Kind]]:
    """Non-overlapping (start, end, kind), sorted; an earlier or longer span wins an overlap."""
    if not text:
        return []
    found: list[tuple[int, int, Kind]] = []
    found.extend((m.start(), m.end(), "ssn") for m in _SSN_SHAPED.finditer(text))
    found.extend((m.start("value"), m.end("value"), "ssn") for m in _SSN_CUED.finditer(text))
    found.extend(_card_spans(text))
    found.extend(_password_spans(text))
    found.sort(key=lambda span: (span[0], -span[1]))
    kept: list[tuple[int, int, Kind]] = []
    for span in found:
        if kept and span[0] < kept[-1][1]:
            continue
        kept.append(span)
    return kept


def _card_spans(text: str) -> list[tuple[int, int, Kind]]:
    spans: list[tuple[int, int, Kind]] = []
    for run in _DIGIT_RUN.finditer(text):
        if len(run.group()) < _CARD_MIN:
            continue
        groups = [(m.start() + run.start(), m.end() + run.start()) for m in _DIGITS.finditer(run.group())]
        first = 0
        while first < len(groups):
            last = _longest_card_from(text, groups, first)
            if last is None:
                first += 1
                continue
            spans.append((groups[first][0], groups[last][1], "card"))
            first = last + 1
    return spans


def _longest_card_from(text: str, groups: list[tuple[int, int]], first: int) -> int | None:
    """The last group of the longest Luhn-valid card starting at group ``first``, if any."""
    digits = ""
    best = None
    for last in range(first, len(groups)):
        digits += text[groups[last][0]:groups[last][1]]
        if len(digits) > _CARD_MAX:
            break
        if len(digits) >= _CARD_MIN and luhn_valid(digits):
            best = last
    return best


def _password_spans(text: str) -> list[tuple[int, int, Kind]]:
    spans: list[tuple[int, int, Kind]] = []
    for match in _PASSWORD.finditer(text):
        value = match.group("value")
        plain = _PLAIN_SEPARATOR.fullmatch(match.group("sep")) is not None
        if value.casefold() in _EVERYDAY_WORDS or not _TYPED_SECRET.search(value):
            continue
        if plain and not _HAS_DIGIT_OR_SYMBOL.match(value):
            continue
        spans.append((match.start("value"), match.end("value"), "password"))
    return spans
