"""Approved answers in the chat: a patient's question answered only with text the hospital approved
(:mod:`mappings.knowledge`), chosen by :meth:`adapter.conversation.front_desk.FrontDesk.decide`.

- a confident match sends the entry's answer verbatim, in the language of the variant that matched,
  with "Was this helpful?" Yes/No buttons (opaque tokens; the first tap of the pair counts, as a
  ``helpful`` or ``unhelpful`` event with the entry, never text);
- a weak match offers the best three entries as a list; a row sends that entry's answer;
- nothing found: the menu (:meth:`adapter.conversation.chat.ChatReplies.menu`) with a way to a person,
  and an ``unanswered`` event (language and time only; :func:`unanswered_counts` for operators).

An entry past its ``valid_until`` (in the site's time zone) is never served. Every answer served is a
``front_desk_event`` row with the entry id and version, which also goes in the message's audit detail.
"""

from __future__ import annotations

import secrets
import unicodedata
from datetime import date, datetime, timedelta

from sqlmodel import Session, col, select, update

from adapter.conversation.front_desk import ANSWER_ROW
from adapter.conversation.tables import FrontDeskEvent
from adapter.conversation.turn import Turn
from adapter.outbox.tables import ActionToken
from adapter.storage.db import table_of, utcnow
from mappings.knowledge import Entry
from portal_links.tokens import token_hash
from whatsapp.interactive import list_message, reply_buttons

HELPFUL, UNHELPFUL = "answer_helpful", "answer_unhelpful"
FEEDBACK = frozenset({HELPFUL, UNHELPFUL})
FEEDBACK_TTL = timedelta(days=7)
MAX_ROWS = 10


def question(turn: Turn, text: str) -> str:
    """Free text that is no command: the approved answer, a list of likely ones, or the menu."""
    desk = turn.replies.front_desk
    decision = desk.decide(text, _today(turn), prefer=turn.language)
    if decision.kind == "answer":
        best = decision.candidates[0]
        turn.language = best.language
        serve(turn, best.entry)
        return "answered"
    if decision.kind == "choices":
        turn.language = decision.candidates[0].language
        rows = [_row(turn, c.entry) for c in decision.candidates]
        turn.send(list_message(_text(turn, "answer_weak"), _text(turn, "questions_button"), rows))
        record(turn.session, "choices", turn.language)
        return "choices"
    turn.language = script_language(text, turn.texts.languages) or turn.language
    record(turn.session, "unanswered", turn.language)
    turn.menu("no_answer")
    return "unanswered"


def questions(turn: Turn) -> str:
    """The "common questions" row of the menu: the entries valid today, as a list (at most ten)."""
    today = _today(turn)
    entries = [e for e in turn.replies.front_desk.base.entries if e.valid_on(today)][:MAX_ROWS]
    if not entries:
        turn.menu("no_answer")
        return "unanswered"
    turn.send(list_message(_text(turn, "questions_prompt"), _text(turn, "questions_button"),
                           [_row(turn, e) for e in entries]))
    return "questions"


def chosen(turn: Turn, entry_id: str) -> str:
    """A row of a questions list: that entry's answer, if it is still served."""
    entry = turn.replies.front_desk.base.entry(entry_id)
    if entry is None or not entry.valid_on(_today(turn)):
        record(turn.session, "unanswered", turn.language)
        turn.menu("no_answer")
        return "unanswered"
    serve(turn, entry)
    return "answered"


def serve(turn: Turn, entry: Entry) -> None:
    """Sends the entry's approved answer verbatim with "Was this helpful?" Yes/No, and records it."""
    texts = entry.texts.get(turn.language) or entry.texts.get(turn.default_language)
    if texts is None:  # the check requires every language; a partial file still answers in some language
        turn.language, texts = next(iter(entry.texts.items()))
    pair = f"answer/{turn.row.wamid}"[:200]
    # The entry and the answer's language: the thanks comes in the language the answer was in.
    detail = f"{entry.key} {turn.language}"
    yes = _mint(turn.session, HELPFUL, turn.patients[0], pair, detail)
    no = _mint(turn.session, UNHELPFUL, turn.patients[0], pair, detail)
    turn.send(reply_buttons(texts.answer, [(yes, _text(turn, "helpful_yes")), (no, _text(turn, "helpful_no"))],
                            footer=_text(turn, "answer_helpful")))
    record(turn.session, "answered", turn.language, entry.key)
    turn.audit_detail["answer"] = entry.key


def feedback(turn: Turn, token: ActionToken) -> str:
    """A "Was this helpful?" tap: counted once per answer (both buttons of the pair are spent)."""
    if token.used_at is not None:
        return "feedback_repeat"
    turn.session.execute(update(table_of(ActionToken)).where(
        col(ActionToken.resource_ref) == token.resource_ref, col(ActionToken.action).in_(FEEDBACK))
        .values(used_at=utcnow()))
    helpful = token.action == HELPFUL
    entry, _, language = (token.detail or "").partition(" ")
    turn.language = language or turn.language
    record(turn.session, "helpful" if helpful else "unhelpful", turn.language, entry or None)
    if helpful:
        turn.say("helpful_thanks")
    else:
        turn.menu("helpful_sorry")
    return "helpful" if helpful else "unhelpful"


def record(session: Session, kind: str, language: str, entry: str | None = None) -> None:
    session.add(FrontDeskEvent(at=utcnow(), kind=kind, language=language[:16], entry=entry))


def unanswered_counts(session: Session, since: datetime) -> dict[str, int]:
    """Questions that found no approved answer since ``since``, per ``"<language>/<UTC day>"``
    (e.g. ``{"es/2026-12-03": 4}``): counts only, the questions' text is never kept."""
    counts: dict[str, int] = {}
    rows = session.exec(select(FrontDeskEvent.language, FrontDeskEvent.at).where(
        col(FrontDeskEvent.kind) == "unanswered", col(FrontDeskEvent.at) >= since))
    for language, at in rows:
        key = f"{language}/{at.date().isoformat()}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def script_language(text: str, languages: list[str]) -> str | None:
    """Chinese when the text is written in CJK characters and Chinese is offered (no word needed)."""
    if any(unicodedata.name(c, "").startswith("CJK") for c in text):
        return next((language for language in languages if language.startswith("zh")), None)
    return None


def _row(turn: Turn, entry: Entry) -> tuple[str, str, str | None]:
    texts = entry.texts.get(turn.language) or entry.texts.get(turn.default_language) or next(iter(entry.texts.values()))
    return f"{ANSWER_ROW}{entry.id}", texts.title, texts.variants[0]


def _text(turn: Turn, key: str) -> str:
    return turn.texts.render(key, turn.language, turn.default_language)[0]


def _today(turn: Turn) -> date:
    return utcnow().astimezone(turn.policy.zone).date()


def _mint(session: Session, action: str, patient_ref: str, pair: str, detail: str) -> str:
    """An opaque token for a feedback button (the table and hashing of
    :func:`adapter.outbox.action_tokens.mint_action_token`, whose actions are the appointment buttons)."""
    token, now = secrets.token_urlsafe(16), utcnow()
    session.add(ActionToken(token_hash=token_hash(token), action=action, patient_ref=patient_ref, resource_ref=pair,
                            version_id=None, detail=detail, created_at=now, expires_at=now + FEEDBACK_TTL))
    return token
