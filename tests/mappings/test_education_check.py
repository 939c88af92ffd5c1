"""The health-education content (mappings/education_content.py), its check (mappings/education_check.py)
and ``bridge education check``."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from adapter.cli.education import education_app
from adapter.education.desk import Education
from mappings.education_check import check
from mappings.education_content import DEFAULT_EDUCATION_DIR, EducationContent, EducationError

TODAY = date(2026, 12, 3)
SHIPPED: dict[str, Any] = yaml.safe_load((DEFAULT_EDUCATION_DIR / "topics.yaml").read_text(encoding="utf-8"))


def written(document: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def problems(document: dict[str, Any], tmp_path: Path, today: date = TODAY) -> list[str]:
    return [str(p) for p in check(EducationContent.load(written(document, tmp_path)), today)]


def edited() -> dict[str, Any]:
    return copy.deepcopy(SHIPPED)


def test_the_shipped_content_has_three_topics_in_three_languages_and_no_problem() -> None:
    content = EducationContent.load()
    assert [t.id for t in content.topics] == ["pregnancy", "diabetes", "active-living"]
    assert content.languages == ("en_US", "es", "zh_CN")
    assert all(set(i.texts) == set(content.languages) for t in content.topics for i in t.items)
    assert check(content, TODAY) == []


@pytest.mark.parametrize("text", [
    "Reply with your card number to get more tips.", "Send us your SSN to stay subscribed.",
    "Responda con su contraseña.", "请回复您的银行卡号。", "Pay with 4111 1111 1111 1111 here."])
def test_an_item_asking_for_a_card_number_ssn_or_password_is_refused(tmp_path: Path, text: str) -> None:
    document = edited()
    document["topics"][1]["items"][0]["es"] = text
    found = problems(document, tmp_path)
    assert any(p.startswith("error: topics diabetes items diabetes-1: es: ") for p in found), found


def test_phi_looking_content_is_a_warning(tmp_path: Path) -> None:
    document = edited()
    document["topics"][0]["items"][1]["en_US"] = "Write to jane.doe@example.org or call 555 010 0199 2233."
    found = problems(document, tmp_path)
    assert "warning: topics pregnancy items pregnancy-2: en_US: holds an e-mail address: make sure it is the " \
           "hospital's" in found
    assert any("holds a long number" in p for p in found)


def test_duplicates_missing_languages_lengths_and_keywords(tmp_path: Path) -> None:
    document = edited()
    document["topics"][2]["items"][0]["id"] = "diabetes-1"
    del document["topics"][0]["items"][2]["zh_CN"]
    document["topics"][1]["es"]["title"] = "Consejos sobre la diabetes tipo dos"
    document["topics"][1]["items"][1]["en_US"] = "Move. " * 120
    document["topics"][2]["en_US"]["keyword"] = "diabetes"
    document["texts"]["es"]["stopped"] = "Ya no recibirá {tema}."
    found = "\n".join(problems(document, tmp_path))
    assert "error: items: id 'diabetes-1' is used 2 times" in found
    assert "error: topics pregnancy items pregnancy-3: no zh_CN text" in found
    assert "error: topics diabetes: es.title has 35 characters; at most 24 (a list row)" in found
    assert "error: topics diabetes items diabetes-2: en_US has 719 characters; at most 600" in found
    assert "error: topics: en_US keyword 'diabetes' is used by 2 topics" in found
    assert "error: texts es.stopped: the only placeholders are {topic}, {keyword} and {cap} (KeyError: 'tema')" in found


def test_expiry_warns_and_a_topic_with_nothing_valid_is_an_error(tmp_path: Path) -> None:
    document = edited()
    for item in document["topics"][2]["items"]:
        item["valid_until"] = date(2026, 11, 30)
    document["topics"][0]["items"][0]["valid_until"] = date(2026, 12, 20)
    found = problems(document, tmp_path)
    assert "warning: topics active-living items active-living-1: expired on 2026-11-30: it is not sent" in found
    assert "warning: topics pregnancy items pregnancy-1: expires on 2026-12-20: review it" in found
    assert "error: topics active-living: no item is valid: subscribers would get nothing" in found
    with pytest.raises(EducationError, match="no item is valid"):
        Education.load(written(document, tmp_path), today=TODAY)


def test_a_structural_problem_is_refused_at_load_saying_where(tmp_path: Path) -> None:
    document = edited()
    del document["topics"][1]["items"][0]["approved_by"]
    document["topics"][0]["version"] = 0
    with pytest.raises(EducationError) as raised:
        EducationContent.load(written(document, tmp_path))
    assert "topics[1] diabetes items[0] diabetes-1: approved_by must say who approved it (a role or committee)" \
        in raised.value.problems
    assert "topics[0] pregnancy: version must be a whole number from 1, raised at every change" in raised.value.problems


def test_the_command_exits_non_zero_on_errors_and_with_strict_on_warnings(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(education_app, ["check", "--today", "2026-12-03"])
    assert ok.exit_code == 0 and "3 topics, 8 items" in ok.output
    document = edited()
    document["topics"][0]["items"][0]["valid_until"] = date(2026, 12, 20)
    path = written(document, tmp_path)
    assert runner.invoke(education_app, ["check", str(path), "--today", "2026-12-03"]).exit_code == 0
    assert runner.invoke(education_app, ["check", str(path), "--today", "2026-12-03", "--strict"]).exit_code == 1
    document["topics"][1]["items"][0]["en_US"] = "Text us your password."
    failed = runner.invoke(education_app, ["check", str(written(document, tmp_path)), "--today", "2026-12-03"])
    assert failed.exit_code == 1 and "error: topics diabetes items diabetes-1: en_US: speaks of" in failed.output


def test_the_settings_refuse_content_with_an_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from adapter.settings.education import EducationSettings

    assert EducationSettings().education_weekly_cap == 2
    document = edited()
    document["topics"][1]["items"][0]["en_US"] = "Text us your password."
    with pytest.raises(ValidationError, match="run `bridge education check`"):
        EducationSettings(education_dir=written(document, tmp_path))
    with pytest.raises(ValidationError):
        EducationSettings(education_weekly_cap=0)
