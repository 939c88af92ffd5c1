"""Health tips in the chat: subscribing to a topic from the menu, and stopping one topic.

- the menu's "Health tips" row (``menu:tips``) lists the topics offered today, each row saying whether
  the patient is subscribed (``tips:on:<topic>`` subscribes, ``tips:off:<topic>`` stops);
- subscribing records the per-topic consent (:mod:`adapter.education.consent`; a care opt-in says nothing
  about topics) and queues the series (:func:`adapter.education.planner.plan_series`). A patient who sent
  STOP is told to send START first: a topic never overrides a global STOP;
- "STOP <keyword>" (any STOP word of :mod:`mappings.conversation` followed by a topic's keyword, e.g.
  "STOP DIABETES", "alto diabetes", "退订糖尿病") or the "Stop these tips" quick reply on an item stops that
  topic and suppresses its queued items; other topics and care messages continue;
- a global STOP stops every topic too (:mod:`adapter.conversation.commands`).

Each change goes in the message's audit entry (``topic`` and ``topic_consent``), never the words.
"""

from __future__ import annotations

from adapter.conversation.front_desk import TIPS_ROW
from adapter.conversation.turn import Turn
from adapter.education.consent import set_topic_consent, subscribed
from adapter.education.planner import plan_series, suppress_topic
from adapter.outbox.tables import ActionToken
from adapter.recipients.consent import OPTED_IN, OPTED_OUT
from adapter.recipients.tables import ConsentRecord
from adapter.storage.db import utcnow
from mappings.conversation import normalise
from mappings.education_content import Topic
from whatsapp.interactive import list_message, text_message

ON, OFF = "on:", "off:"


def topics(turn: Turn) -> str:
    """The "Health tips" row of the menu: the topics as a list, each saying whether the patient has it."""
    education, language = turn.replies.education, _language(turn)
    offered = education.offered(utcnow().astimezone(turn.policy.zone).date())
    if not offered:
        turn.send(text_message(_text(turn, "none")))
        return "tips_none"
    mine = subscribed(turn.session, turn.patients[0])
    rows: list[tuple[str, str, str | None]] = [
        (f"{TIPS_ROW}{OFF if t.id in mine else ON}{t.id}", t.title(language, turn.default_language),
         _text(turn, "subscribed_row" if t.id in mine else "subscribe")) for t in offered]
    turn.send(list_message(_text(turn, "prompt"), _text(turn, "button"), rows))
    return "tips"


def chosen(turn: Turn, row: str) -> str:
    """A row of the topics list: subscribe (``on:<topic>``) or stop (``off:<topic>``)."""
    topic = turn.replies.education.content.topic(row.removeprefix(ON).removeprefix(OFF))
    if topic is None:  # a row of an older list, for a topic since removed
        turn.menu()
        return "menu"
    if row.startswith(OFF):
        return stop_topic(turn, topic, turn.patients)
    return subscribe(turn, topic)


def subscribe(turn: Turn, topic: Topic) -> str:
    patient, education = turn.patients[0], turn.replies.education
    record = turn.session.get(ConsentRecord, patient)
    if record is not None and record.status == OPTED_OUT:
        turn.send(text_message(_text(turn, "opted_out")))
        return "tips_opted_out"
    turn.audit_detail["topic"] = topic.id
    if not set_topic_consent(turn.session, patient, topic.id, OPTED_IN, "chat"):
        turn.send(text_message(_confirmation(turn, topic)))
        return "tips_already"
    turn.audit_detail["topic_consent"] = OPTED_IN
    turn.send(text_message(_confirmation(turn, topic)))  # queued first: it goes before the first item
    plan_series(turn.session, turn.replies.outbox, topic, patient_ref=patient, recipient=turn.recipient,
                language=_language(turn), policy=education.policy)
    return "tips_subscribed"


def stop_topic(turn: Turn, topic: Topic, patients: list[str]) -> str:
    """Stops one topic for these patients and suppresses its queued items; confirms once."""
    changed = [p for p in patients if set_topic_consent(turn.session, p, topic.id, OPTED_OUT, "chat")]
    turn.suppressed += suppress_topic(turn.session, patients, topic.id, f"patient stopped topic {topic.id}")
    turn.audit_detail["topic"] = topic.id
    if not changed:
        return "tips_already_stopped"
    turn.audit_detail["topic_consent"] = OPTED_OUT
    language = _language(turn)
    turn.send(text_message(_text(turn, "stopped", topic=topic.title(language, turn.default_language))))
    return "tips_stopped"


def stop_request(turn: Turn, text: str) -> Topic | None:
    """The topic a "STOP <keyword>" message names, or None: the text ends with a topic's keyword (in any
    language) and what comes before it is a whole-message STOP word."""
    said = normalise(text)
    for topic in turn.replies.education.content.topics:
        for words in topic.words.values():
            keyword = normalise(words.keyword)
            head = said.removesuffix(keyword).strip()
            if head != said and head:
                match = turn.texts.classify(head)
                if match is not None and match.intent == "stop":
                    return topic
    return None


def tapped_stop(turn: Turn, token: ActionToken) -> str:
    """The "Stop these tips" quick reply of an item: that topic stops (even on a late tap)."""
    topic = turn.replies.education.content.topic(token.detail or "")
    if topic is None:
        turn.menu()
        return "unknown_payload"
    return stop_topic(turn, topic, [token.patient_ref])


def _confirmation(turn: Turn, topic: Topic) -> str:
    language = _language(turn)
    words = topic.words.get(language) or next(iter(topic.words.values()))
    return _text(turn, "subscribed", topic=words.title, keyword=words.keyword.upper(),
                 cap=str(turn.replies.education.policy.weekly_cap))


def _language(turn: Turn) -> str:
    """The turn's language when the content has it, else the service's default language."""
    languages = turn.replies.education.content.languages
    return turn.language if turn.language in languages else (
        turn.default_language if turn.default_language in languages else languages[0])


def _text(turn: Turn, key: str, **values: str) -> str:
    return turn.replies.education.content.text(key, _language(turn), turn.default_language, **values)
