"""Checking the hospital's knowledge file before it is used (``bridge knowledge check``, and at start-up).

Errors (the file is refused; the service does not start on it):

- an id used twice (entries, departments), an entry naming an unknown department;
- a question variant that two entries share (after :mod:`mappings.knowledge_match` normalisation):
  the bot could not tell which answer was meant;
- a language of ``languages`` missing from an entry or a department name;
- a text over WhatsApp's limits: an answer is sent as an interactive body with "was this helpful?"
  buttons (1,024 characters), a title or a department name is a list row (24);
- content that holds or asks for a card number, a social-security number or a password: a secret
  value found by :func:`mappings.redact.find_sensitive` (the same patterns that strip them from
  patients' messages), or any mention of those words (:data:`SENSITIVE_WORDS`) — an approved answer
  has no reason to speak of them, and the bot's own fixed reply already tells patients not to send them.

Warnings (reported; the file is used): an entry past its ``valid_until`` (it is not served) or due
within :data:`EXPIRY_NOTICE`; a long digit run or an e-mail address, which may identify a person
(a hospital's public phone number is fine: the check asks for a look).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from mappings.identifying import PHONE_DIGITS_MIN
from mappings.knowledge import KnowledgeBase
from mappings.knowledge_match import Normaliser
from mappings.redact import find_sensitive

MAX_ANSWER = 1024  # an interactive (reply buttons) body
MAX_ROW_TITLE = 24  # a list row title
EXPIRY_NOTICE = timedelta(days=30)
SENSITIVE_WORDS = re.compile(
    r"(?<!\w)(?:card\s*(?:number|no|details|digits)|credit\s*card|debit\s*card|cvv|cvc|security\s*code"
    r"|ssn|social\s*security|password|passcode|pin(?:\s*(?:code|number))?"
    r"|n[uú]mero\s+de\s+(?:la\s+)?tarjeta|tarjeta\s+de\s+(?:cr[eé]dito|d[eé]bito)|seguro\s+social"
    r"|contrase[ñn]a|clave)(?!\w)"
    r"|银行卡|信用卡|借记卡|卡号|安全码|社会安全号|社保号|密码|口令",
    re.IGNORECASE)
_DIGITS = re.compile(r"\d(?:[\d\s().+\-/]*\d)?")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


@dataclass(frozen=True)
class Problem:
    level: Literal["error", "warning"]
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def check(base: KnowledgeBase, today: date) -> list[Problem]:
    """Every problem of ``base`` on ``today``, errors and warnings, in file order."""
    problems: list[Problem] = []
    problems += duplicate_ids("entries", [e.id for e in base.entries])
    problems += duplicate_ids("departments", [d.id for d in base.departments])
    known = {d.id for d in base.departments}
    for department in base.departments:
        where = f"departments {department.id}"
        for language in base.languages:
            name = department.names.get(language)
            if name is None:
                problems.append(Problem("error", where, f"no name in {language}"))
            elif len(name) > MAX_ROW_TITLE:
                problems.append(Problem("error", where, f"{language} name has {len(name)} characters; "
                                        f"at most {MAX_ROW_TITLE} (a list row)"))
    for entry in base.entries:
        where = f"entries {entry.id}"
        if entry.department is not None and entry.department not in known:
            problems.append(Problem("error", where, f"department {entry.department!r} is not in departments"))
        if not entry.valid_on(today):
            problems.append(Problem("warning", where, f"expired on {entry.valid_until.isoformat()}: it is not served"))
        elif entry.valid_until - today < EXPIRY_NOTICE:
            problems.append(Problem("warning", where, f"expires on {entry.valid_until.isoformat()}: review it"))
        for language in base.languages:
            texts = entry.texts.get(language)
            if texts is None:
                problems.append(Problem("error", where, f"no {language} text (languages: {list(base.languages)})"))
                continue
            if len(texts.answer) > MAX_ANSWER:
                problems.append(Problem("error", where, f"{language}.answer has {len(texts.answer):,} characters; "
                                        f"at most {MAX_ANSWER:,}"))
            if len(texts.title) > MAX_ROW_TITLE:
                problems.append(Problem("error", where, f"{language}.title has {len(texts.title)} characters; "
                                        f"at most {MAX_ROW_TITLE} (a list row)"))
            for field, text in (("title", texts.title), ("answer", texts.answer),
                                *(("variants", v) for v in texts.variants)):
                problems += content_problems(f"{where}: {language}.{field}", text)
    problems += _shared_variants(base)
    return problems


def sensitive_reason(text: str) -> str | None:
    """Why ``text`` may not be sent by the bot (it holds or asks for a secret), or None."""
    kinds = find_sensitive(text)
    if kinds:
        return f"holds what looks like a {' / '.join(kinds)}"
    if SENSITIVE_WORDS.search(text):
        return "speaks of card numbers, social-security numbers or passwords, which the bot never asks for"
    return None


def content_problems(where: str, text: str) -> list[Problem]:
    """A text's own problems: a secret or a request for one (error), an e-mail address or a long number
    (warnings). Shared with :mod:`mappings.education_check`."""
    problems = []
    reason = sensitive_reason(text)
    if reason:
        problems.append(Problem("error", where, reason))
    if _EMAIL.search(text):
        problems.append(Problem("warning", where, "holds an e-mail address: make sure it is the hospital's"))
    for run in _DIGITS.findall(text):
        if sum(c.isdigit() for c in run) >= PHONE_DIGITS_MIN:
            problems.append(Problem("warning", where, "holds a long number: make sure it is public (not a "
                                                      "patient's phone or identifier)"))
            break
    return problems


def duplicate_ids(what: str, ids: list[str]) -> list[Problem]:
    return [Problem("error", what, f"id {value!r} is used {count} times")
            for value, count in Counter(ids).items() if count > 1]


def _shared_variants(base: KnowledgeBase) -> list[Problem]:
    problems = []
    for language in base.languages:
        normaliser = Normaliser(base.synonyms.get(language, {}), base.ignore_words.get(language, frozenset()))
        owners: dict[str, str] = {}
        for entry in base.entries:
            texts = entry.texts.get(language)
            for variant in texts.variants if texts else ():
                form = " ".join(normaliser.terms(variant))
                owner = owners.setdefault(form, entry.id)
                if owner != entry.id:
                    problems.append(Problem("error", f"entries {entry.id}", f"{language} variant {variant!r} is "
                                            f"also a variant of {owner} (after normalisation): which was meant?"))
    return problems
