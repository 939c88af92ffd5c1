"""The knowledge file's loader and the matcher (mappings/knowledge.py, mappings/knowledge_match.py): pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from adapter.conversation.front_desk import FrontDesk
from mappings.knowledge import DEFAULT_KNOWLEDGE_FILE, Hours, KnowledgeBase, KnowledgeError
from mappings.knowledge_match import Matcher, fold, split

TODAY = date(2026, 12, 3)
SHIPPED = KnowledgeBase.load()


def desk(**options: float) -> FrontDesk:
    return FrontDesk(SHIPPED, **options)  # type: ignore[arg-type]


def test_the_shipped_file_has_every_language_and_department() -> None:
    assert SHIPPED.languages == ("en_US", "es", "zh_CN")
    assert all(set(entry.texts) == set(SHIPPED.languages) for entry in SHIPPED.entries)
    assert {d.id for d in SHIPPED.departments} >= {"front-desk", "billing"}
    clinic = SHIPPED.entry("clinic-hours")
    assert clinic is not None and clinic.key == "clinic-hours@3" and clinic.department == "front-desk"


def test_folding_handles_case_accents_punctuation_and_cjk() -> None:
    assert fold("¿A QUÉ hora abre la Clínica?") == "a que hora abre la clinica"
    assert fold("诊所几点开门？") == "诊所几点开门"  # noqa: RUF001 (the full-width question mark is the point)
    assert split("clinic 诊所 open") == ["clinic", "诊", "所", "open"]


@pytest.mark.parametrize(("question", "language"), [
    ("What time does the clinic open?", "en_US"), ("what time does the CLINIC open", "en_US"),
    ("When does the hospital open?", "en_US"),  # a synonym: hospital -> clinic
    ("¿A qué hora abre la clínica?", "es"), ("a que hora abre la clinica", "es"),
    ("诊所几点开门？", "zh_CN"), ("医院几点开门", "zh_CN")])  # noqa: RUF001
def test_the_clinic_hours_question_is_a_confident_match_in_its_language(question: str, language: str) -> None:
    decision = desk().decide(question, TODAY, prefer="en_US")
    assert decision.kind == "answer"
    [best] = decision.candidates
    assert (best.entry.id, best.language) == ("clinic-hours", language)


def test_a_vague_question_offers_the_best_three_and_gibberish_nothing() -> None:
    weak = desk().decide("hours", TODAY, prefer="en_US")
    assert weak.kind == "choices" and len(weak.candidates) == 3
    assert [c.score for c in weak.candidates] == sorted((c.score for c in weak.candidates), reverse=True)
    assert desk().decide("hello", TODAY, prefer="en_US").kind == "none"
    assert desk().decide("zzzz qqqq", TODAY, prefer="en_US").kind == "none"


def test_two_close_entries_are_never_a_confident_answer() -> None:
    # "What time does it open?" scores the clinic's and the pharmacy's hours alike: the margin makes it a list.
    decision = desk().decide("几点开门", TODAY, prefer="zh_CN")
    assert decision.kind == "choices"
    assert {c.entry.id for c in decision.candidates[:2]} == {"clinic-hours", "pharmacy-hours"}


def test_an_expired_entry_is_never_proposed() -> None:
    matcher = Matcher(SHIPPED)
    on_time = matcher.rank("is there a flu vaccine clinic", date(2026, 1, 10))
    assert on_time[0].entry.id == "flu-clinic-2025" and on_time[0].score == 100
    assert all(c.entry.id != "flu-clinic-2025" for c in matcher.rank("is there a flu vaccine clinic", TODAY, limit=10))


def test_matching_is_deterministic_and_explains_itself() -> None:
    first = Matcher(SHIPPED).rank("where can I park my car", TODAY)
    again = Matcher(SHIPPED).rank("where can I park my car", TODAY)
    assert first == again
    assert first[0].entry.id == "parking" and first[0].variant == "where can i park" and first[0].language == "en_US"


def test_hours_say_when_someone_answers() -> None:
    zone = ZoneInfo("America/New_York")
    hours = Hours(zone, time(8, 0), time(17, 0), frozenset(range(5)))
    wednesday_noon = datetime(2026, 12, 2, 12, 0, tzinfo=zone)
    friday_evening = datetime(2026, 12, 4, 19, 0, tzinfo=zone)
    assert hours.is_open(wednesday_noon.astimezone(UTC)) and not hours.is_open(friday_evening)
    assert hours.reply_by(wednesday_noon) == ("today", datetime(2026, 12, 2, 17, 0, tzinfo=zone))
    kind, when = hours.reply_by(friday_evening)
    assert kind == "next_day" and when.weekday() == 0 and (when.hour, when.minute) == (8, 0)


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "knowledge.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def test_the_loader_says_where_each_problem_is(tmp_path: Path) -> None:
    document = yaml.safe_load(DEFAULT_KNOWLEDGE_FILE.read_text(encoding="utf-8"))
    document["entries"][0]["valid_until"] = "soon"
    del document["entries"][1]["es"]["answer"]
    document["departments"][0]["hours"] = "18:00-08:00"
    document["departments"][1]["time_zone"] = "Mars/Olympus"
    with pytest.raises(KnowledgeError) as raised:
        KnowledgeBase.load(write(tmp_path, document))
    problems = "\n".join(raised.value.problems)
    assert "entries[0] clinic-hours: valid_until must be a date" in problems
    assert "entries[1] parking: es.answer: the approved answer text is required" in problems
    assert "departments[0] front-desk: hours must close after they open" in problems
    assert "departments[1] billing: time_zone must be an IANA name" in problems
    with pytest.raises(KnowledgeError, match="cannot read"):
        KnowledgeBase.load(tmp_path / "missing.yaml")
