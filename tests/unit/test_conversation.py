"""STOP/START keywords per language: whole-message matches only, never a word inside a sentence."""

from __future__ import annotations

import pytest

from mappings.conversation import Conversation, ConversationError, normalise


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
