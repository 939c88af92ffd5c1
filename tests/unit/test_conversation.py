"""STOP/START keywords per language: whole-message matches only, never a word inside a sentence."""

from __future__ import annotations

import pytest

from mappings.conversation import Conversation, ConversationError, Match, normalise


@pytest.fixture(scope="module")
def conversation() -> Conversation:
    return Conversation.load()


@pytest.mark.parametrize(("text", "intent", "language"), [
    ("STOP", "stop", "en_US"), (" stop. ", "stop", "en_US"), ("Unsubscribe!", "stop", "en_US"),
    ("Stop reminders", "stop", "en_US"), ("BAJA", "stop", "es"), ("alto", "stop", "es"),
    ("Cancelar suscripción", "stop", "es"), ("退订", "stop", "zh_CN"), ("停止。", "stop", "zh_CN"),
    ("START", "start", "en_US"), ("Alta", "start", "es"), ("订阅", "start", "zh_CN"),
])
def test_keywords_in_three_languages(conversation: Conversation, text: str, intent: str, language: str) -> None:
    match = conversation.intent(text)
    assert match is not None and (match.intent, match.language) == (intent, language)


@pytest.mark.parametrize("text", [
    "please don't stop my reminders", "cancel", "Cancel my appointment", "stopping by tomorrow", "", None, "🙂",
])
def test_not_a_keyword(conversation: Conversation, text: str | None) -> None:
    assert conversation.intent(text) is None


def test_replies_fall_back_to_the_default_language(conversation: Conversation) -> None:
    text, language = conversation.text("stopped", "fr_FR", "en_US")
    assert language == "en_US" and "START" in text
    assert "ALTO" in conversation.text("started", "es_MX", "en_US")[0]
    assert set(conversation.languages) >= {"en_US", "es", "zh_CN"}


def test_normalise_folds_case_width_and_edges() -> None:
    assert normalise("  \uff33\uff34\uff2f\uff30!! ") == "stop"  # full-width letters
    assert normalise("Opt   Out") == "opt out"


def test_a_language_without_texts_is_refused() -> None:
    with pytest.raises(ConversationError, match="texts"):
        Conversation({"en_US": {"stop_words": ["stop"], "start_words": ["start"]}})


# --- every intent, emergencies first, texts complete in every language -------------------------------

from mappings.conversation import BUTTON_TITLE_KEYS, MAX_TEXT, placeholders  # noqa: E402

SHIPPED_LANGUAGES = ("en_US", "es", "zh_CN")
TEXT_KEYS = frozenset({
    "stopped", "started", "welcome", "emergency", "staff_ack", "when_today", "when_next_day", "sensitive",
    "menu", "menu_staff", "menu_stop", "confirmed", "already", "cancel_ask", "cancel_ask_short", "yes_cancel",
    "no_keep",
    "cancelled", "kept", "changed", "status_booked", "status_cancelled", "status_other", "not_allowed",
    "slots_prompt", "slots_button", "rescheduled", "no_slots", "handoff", "expired",
    "menu_button", "menu_appointments", "menu_questions", "menu_departments", "no_answer", "appointments_none",
    "appointment_line", "site_default", "button_confirm", "button_reschedule", "button_cancel", "questions_prompt",
    "questions_button", "answer_weak", "answer_helpful", "helpful_yes", "helpful_no", "helpful_thanks",
    "helpful_sorry", "departments_prompt", "departments_button", "queued_open", "queued_closed", "wait_minutes",
    "wait_hours",
})
PLACEHOLDERS = {
    "staff_ack": {"when"}, "when_today": {"time"}, "when_next_day": {"time"}, "cancel_ask": {"date", "time"},
    "changed": {"date", "time", "status"}, "rescheduled": {"date", "time"},
    "appointment_line": {"date", "time", "site"}, "queued_open": {"department", "wait"},
    "queued_closed": {"department", "when"}, "wait_minutes": {"count"}, "wait_hours": {"count"},
}


@pytest.mark.parametrize(("text", "language"), [
    ("I have chest pain", "en_US"), ("I can't breathe", "en_US"), ("i cant breathe!!", "en_US"),
    ("I can’t breathe", "en_US"), ("CHEST-PAIN since this morning", "en_US"), ("Emergency", "en_US"),  # noqa: RUF001
    ("I want to kill myself", "en_US"), ("took an overdose", "en_US"), ("thinking about suicide", "en_US"),
    ("tengo dolor de pecho", "es"), ("No puedo respirar", "es"), ("es una EMERGENCIA", "es"),
    ("pienso en el suicidio", "es"), ("我胸痛", "zh_CN"), ("我现在呼吸困难。", "zh_CN"), ("需要急救", "zh_CN"),
    ("我想自杀", "zh_CN"),
])
def test_emergency_phrases_match_anywhere(conversation: Conversation, text: str, language: str) -> None:
    match = conversation.classify(text)
    assert match is not None and (match.intent, match.language) == ("emergency", language)


@pytest.mark.parametrize("text", ["STOP chest pain", "help, I can't breathe", "yes emergency", "人工 胸痛"])
def test_emergency_wins_over_every_other_intent(conversation: Conversation, text: str) -> None:
    match = conversation.classify(text)
    assert match is not None and match.intent == "emergency"


@pytest.mark.parametrize("text", ["emergencyroom", "the overdoses list", "brief pain in the ches", "painting"])
def test_emergency_phrases_respect_word_boundaries(conversation: Conversation, text: str) -> None:
    assert conversation.classify(text) is None


@pytest.mark.parametrize(("text", "intent", "language"), [
    ("STAFF", "staff", "en_US"), ("Agent", "staff", "en_US"), ("talk to staff", "staff", "en_US"),
    ("human!", "staff", "en_US"), ("Persona", "staff", "es"), ("hablar con alguien", "staff", "es"),
    ("agente", "staff", "es"), ("人工", "staff", "zh_CN"), ("转人工", "staff", "zh_CN"), ("客服", "staff", "zh_CN"),
    ("Yes", "yes", "en_US"), ("y", "yes", "en_US"), ("Sí", "yes", "es"), ("si", "yes", "es"), ("是", "yes", "zh_CN"),
    ("好", "yes", "zh_CN"), ("No", "no", "en_US"), ("n", "no", "en_US"), ("不", "no", "zh_CN"), ("否", "no", "zh_CN"),
    ("STOP", "stop", "en_US"), ("退订", "stop", "zh_CN"), ("START", "start", "en_US"),
])
def test_whole_message_intents(conversation: Conversation, text: str, intent: str, language: str) -> None:
    match = conversation.classify(text)
    assert match is not None and (match.intent, match.language) == (intent, language)


@pytest.mark.parametrize("text", [
    "yes I will come", "I need a human touch", "no problem", "是不是", "ask the staff about parking", "", None,
])
def test_new_keywords_are_whole_message_only(conversation: Conversation, text: str | None) -> None:
    assert conversation.classify(text) is None


@pytest.mark.parametrize("text", ["yes", "STAFF", "人工", "no", "chest pain"])
def test_intent_stays_stop_and_start_only(conversation: Conversation, text: str) -> None:
    """Callers acting on consent read ``intent()``: "yes" must never look like START to them."""
    assert conversation.intent(text) is None


@pytest.mark.parametrize(("language", "staff_word", "stop_word"), [
    ("en_US", "STAFF", "STOP"), ("es", "PERSONA", "ALTO"), ("zh_CN", "人工", "退订"),
])
def test_welcome_names_words_that_work(conversation: Conversation, language: str, staff_word: str,
                                       stop_word: str) -> None:
    welcome, used = conversation.text("welcome", language, "en_US")
    assert used == language and staff_word in welcome and stop_word in welcome
    assert (conversation.classify(staff_word) or Match("stop", "")).intent == "staff"
    assert (conversation.classify(stop_word) or Match("start", "")).intent == "stop"


def test_every_language_has_every_text_within_limits(conversation: Conversation) -> None:
    assert set(SHIPPED_LANGUAGES) <= set(conversation.languages)
    for language in SHIPPED_LANGUAGES:
        assert conversation.text_keys(language) == TEXT_KEYS, language
        for key in TEXT_KEYS:
            text, used = conversation.text(key, language, "en_US")
            assert used == language
            limit = 20 if key in BUTTON_TITLE_KEYS else MAX_TEXT
            assert 1 <= len(text) <= limit, (language, key, len(text))


def test_placeholders_are_the_same_in_every_language(conversation: Conversation) -> None:
    for key in TEXT_KEYS:
        for language in SHIPPED_LANGUAGES:
            found = placeholders(conversation.text(key, language, "en_US")[0])
            assert found == PLACEHOLDERS.get(key, set()), (language, key)


def test_button_titles(conversation: Conversation) -> None:
    assert {"menu_staff", "menu_stop", "yes_cancel", "no_keep", "slots_button"} <= BUTTON_TITLE_KEYS
    for language in SHIPPED_LANGUAGES:
        for key in BUTTON_TITLE_KEYS:
            assert len(conversation.text(key, language, "en_US")[0]) <= 20


def test_render_fills_placeholders_and_builds_when(conversation: Conversation) -> None:
    when, _ = conversation.render("when_today", "es_MX", "en_US", time="17:00")
    text, used = conversation.render("staff_ack", "es_MX", "en_US", when=when)
    assert used == "es" and "hoy antes de las 17:00" in text and "{" not in text
    text, _ = conversation.render("changed", "en_US", "en_US", date="Tue 1 Dec", time="10:30",
                                  status=conversation.text("status_booked", "en_US", "en_US")[0])
    assert text.endswith("Tue 1 Dec at 10:30 (booked).")
    assert conversation.render("confirmed", "zh_CN", "en_US")[0] == "谢谢，您的预约已确认。"  # noqa: RUF001


def test_render_refuses_missing_and_unknown_values(conversation: Conversation) -> None:
    with pytest.raises(ConversationError, match=r"missing values \['time'\]"):
        conversation.render("cancel_ask", "en_US", "en_US", date="Tue 1 Dec")
    with pytest.raises(ConversationError, match=r"unknown values \['name'\]"):
        conversation.render("confirmed", "en_US", "en_US", name="x")


def test_a_value_is_never_reinterpreted(conversation: Conversation) -> None:
    text, _ = conversation.render("rescheduled", "en_US", "en_US", date="{time}", time="{0.__class__}")
    assert text == "Your appointment is moved to {time} at {0.__class__}."


def _minimal(**texts: str) -> dict[str, object]:
    return {"stop_words": ["stop"], "start_words": ["start"], "staff_words": ["staff"],
            "emergency_words": ["emergency"], "texts": {"stopped": "s", "started": "s", **texts}}


@pytest.mark.parametrize(("spec", "message"), [
    (_minimal(bad="{0.__class__}"), "plain name"),
    (_minimal(bad="{when!r}"), "plain name"),
    (_minimal(bad="{oops"), "braces"),
    (_minimal(menu_staff="x" * 21), "menu_staff must be 1 to 20"),
    (_minimal(welcome="x" * 1025), "welcome must be 1 to 1024"),
    ({**_minimal(), "yes_words": [True]}, "quote yes"),
    ({**_minimal(), "no_words": ["stop"]}, "both a stop word"),
    ({k: v for k, v in _minimal().items() if k != "emergency_words"}, "emergency_words"),
])
def test_malformed_files_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConversationError, match=message):
        Conversation({"en_US": spec})


def test_a_minimal_language_falls_back_for_missing_texts() -> None:
    conversation = Conversation({"en_US": _minimal(welcome="w"), "fr": _minimal()})
    assert conversation.text("welcome", "fr", "en_US") == ("w", "en_US")
    assert conversation.classify("yes") is None  # yes/no words are optional
