"""Checking the health-education content before it is used (``bridge education check``, and at start-up).

The same checks as the front desk's answers (:mod:`mappings.knowledge_check`, one truth for what the bot
may send): a text that holds or asks for a card number, a social-security number or a password is an
error; an e-mail address or a long number is a warning.

Errors (the content is refused):

- an id used twice (topics; items across every topic), two topics sharing a STOP keyword in a language;
- a language of ``languages`` missing from a topic, an item or the chat texts; a chat text with a placeholder
  other than ``{topic}``, ``{keyword}`` and ``{cap}``;
- a text over WhatsApp's limits: a topic title is a list row (24 characters) and its description the row's
  second line (72); an item is a template parameter (:data:`MAX_ITEM`, so that the template's body stays
  under Meta's 1,024); a keyword is one word (no space), so "STOP <keyword>" is unambiguous;
- a topic with no item valid on the day checked.

Warnings (reported; the content is used): an item or topic past its ``valid_until`` (not sent) or due
within :data:`mappings.knowledge_check.EXPIRY_NOTICE`.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

from mappings.education_content import EducationContent, Topic
from mappings.knowledge_check import EXPIRY_NOTICE, MAX_ROW_TITLE, Problem, content_problems, duplicate_ids

MAX_ITEM = 600
MAX_ROW_DESCRIPTION = 72
MAX_BUTTON = 20


def check(content: EducationContent, today: date) -> list[Problem]:
    """Every problem of ``content`` on ``today``, errors and warnings, in file order."""
    problems: list[Problem] = []
    problems += duplicate_ids("topics", [t.id for t in content.topics])
    problems += duplicate_ids("items", [i.id for t in content.topics for i in t.items])
    problems += _texts(content)
    for topic in content.topics:
        problems += _topic(content, topic, today)
    for language in content.languages:
        keywords = Counter(t.words[language].keyword.casefold() for t in content.topics if language in t.words)
        problems += [Problem("error", "topics", f"{language} keyword {word!r} is used by {n} topics")
                     for word, n in keywords.items() if n > 1]
    return problems


def _texts(content: EducationContent) -> list[Problem]:
    problems = []
    for language in content.languages:
        texts = content.texts.get(language, {})
        if not texts:
            problems.append(Problem("error", "texts", f"no {language} texts"))
            continue
        for key, text in texts.items():
            problems += content_problems(f"texts {language}.{key}", text)
            try:
                text.format(topic="t", keyword="k", cap="1")
            except (KeyError, IndexError, ValueError) as exc:
                problems.append(Problem("error", f"texts {language}.{key}", f"the only placeholders are {{topic}}, "
                                        f"{{keyword}} and {{cap}} ({type(exc).__name__}: {exc})"))
        limits = {"menu_row": MAX_ROW_TITLE, "button": MAX_BUTTON, "subscribe": MAX_ROW_DESCRIPTION,
                  "subscribed_row": MAX_ROW_DESCRIPTION}
        for key, limit in limits.items():
            if len(texts.get(key, "")) > limit:
                problems.append(Problem("error", f"texts {language}.{key}", f"{len(texts[key])} characters; at "
                                        f"most {limit}"))
    return problems


def _topic(content: EducationContent, topic: Topic, today: date) -> list[Problem]:
    where = f"topics {topic.id}"
    problems = _expiry(where, topic.valid_until, today)
    for language in content.languages:
        words = topic.words.get(language)
        if words is None:
            problems.append(Problem("error", where, f"no {language} title, keyword and description"))
            continue
        if len(words.title) > MAX_ROW_TITLE:
            problems.append(Problem("error", where, f"{language}.title has {len(words.title)} characters; at most "
                                    f"{MAX_ROW_TITLE} (a list row)"))
        if len(words.description) > MAX_ROW_DESCRIPTION:
            problems.append(Problem("error", where, f"{language}.description has {len(words.description)} "
                                    f"characters; at most {MAX_ROW_DESCRIPTION}"))
        if " " in words.keyword:
            problems.append(Problem("error", where, f"{language}.keyword must be one word"))
        for field, text in (("title", words.title), ("keyword", words.keyword), ("description", words.description)):
            problems += content_problems(f"{where}: {language}.{field}", text)
    for item in topic.items:
        at = f"{where} items {item.id}"
        problems += _expiry(at, item.valid_until, today)
        for language in content.languages:
            body = item.texts.get(language)
            if body is None:
                problems.append(Problem("error", at, f"no {language} text (languages: {list(content.languages)})"))
                continue
            if len(body) > MAX_ITEM:
                problems.append(Problem("error", at, f"{language} has {len(body):,} characters; at most {MAX_ITEM}"))
            problems += content_problems(f"{at}: {language}", body)
    if topic.valid_on(today) and not any(item.valid_on(today) for item in topic.items):
        problems.append(Problem("error", where, "no item is valid: subscribers would get nothing"))
    return problems


def _expiry(where: str, valid_until: date, today: date) -> list[Problem]:
    if today > valid_until:
        return [Problem("warning", where, f"expired on {valid_until.isoformat()}: it is not sent")]
    if valid_until - today < EXPIRY_NOTICE:
        return [Problem("warning", where, f"expires on {valid_until.isoformat()}: review it")]
    return []
