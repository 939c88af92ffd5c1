"""``bridge knowledge check`` and the start-up check of the knowledge file (mappings/knowledge_check.py)."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from adapter.cli.knowledge import knowledge_app
from adapter.settings import SettingsError, load_settings
from mappings.knowledge import DEFAULT_KNOWLEDGE_FILE, KnowledgeBase
from mappings.knowledge_check import check, sensitive_reason

TODAY = date(2026, 12, 3)
SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_KNOWLEDGE_FILE.read_text(encoding="utf-8"))


def problems(document: dict[str, Any], tmp_path: Path, today: date = TODAY) -> list[str]:
    path = tmp_path / "knowledge.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return [str(p) for p in check(KnowledgeBase.load(path), today)]


def edited() -> dict[str, Any]:
    return copy.deepcopy(SHIPPED)


def test_the_shipped_file_has_no_error_and_warns_of_its_expired_entry() -> None:
    found = [str(p) for p in check(KnowledgeBase.load(), TODAY)]
    assert found == ["warning: entries flu-clinic-2025: expired on 2026-03-31: it is not served"]


def test_duplicate_ids_variants_unknown_departments_and_missing_languages(tmp_path: Path) -> None:
    document = edited()
    document["entries"].append(copy.deepcopy(document["entries"][1]))  # parking, twice
    document["entries"][2]["en_US"]["variants"].append("When does the CLINIC open?")  # clinic-hours' variant
    document["entries"][3]["department"] = "radiology"
    del document["entries"][4]["zh_CN"]
    found = "\n".join(problems(document, tmp_path))
    assert "error: entries: id 'parking' is used 2 times" in found
    assert ("error: entries what-to-bring: en_US variant 'When does the CLINIC open?' is also a variant of "
            "clinic-hours") in found
    assert "error: entries visiting-hours: department 'radiology' is not in departments" in found
    assert "error: entries results: no zh_CN text" in found


@pytest.mark.parametrize("answer", [
    "Please reply with your card number to pay.", "Send us your SSN so we can find you.",
    "Tell us your portal password and we will reset it.", "Envíe el número de tarjeta para pagar.",
    "Responda con su contraseña.", "请回复您的银行卡号。", "请发送您的密码。", "Pay with 4111 1111 1111 1111 here."])
def test_a_text_asking_for_a_card_number_ssn_or_password_is_refused(tmp_path: Path, answer: str) -> None:
    assert sensitive_reason(answer)
    document = edited()
    document["entries"][0]["es"]["answer"] = answer
    assert any(p.startswith("error: entries clinic-hours: es.answer: ") for p in problems(document, tmp_path))


def test_ordinary_answers_are_not_mistaken_for_sensitive_ones() -> None:
    for entry in KnowledgeBase.load().entries:
        for texts in entry.texts.values():
            assert sensitive_reason(texts.answer) is None, entry.id


def test_length_limits_and_expiry(tmp_path: Path) -> None:
    document = edited()
    document["entries"][0]["en_US"]["answer"] = "x " * 600
    document["entries"][1]["es"]["title"] = "Un título demasiado largo para una fila"
    document["departments"][0]["name"]["zh_CN"] = "前" * 25
    document["entries"][2]["en_US"]["answer"] = "Call us on 212 555 0100 or write to desk@example.org."
    found = problems(document, tmp_path, today=date(2027, 12, 20))
    assert "error: entries clinic-hours: en_US.answer has 1,199 characters; at most 1,024" in found
    assert "error: entries parking: es.title has 39 characters; at most 24 (a list row)" in found
    assert "error: departments front-desk: zh_CN name has 25 characters; at most 24 (a list row)" in found
    assert "warning: entries clinic-hours: expires on 2027-12-31: review it" in found
    assert any(p.startswith("warning: entries what-to-bring: en_US.answer: holds an e-mail") for p in found)
    assert any(p.startswith("warning: entries what-to-bring: en_US.answer: holds a long number") for p in found)


def test_the_command_exits_non_zero_on_errors_and_with_strict_on_warnings(tmp_path: Path) -> None:
    runner = CliRunner()
    shipped = runner.invoke(knowledge_app, ["check", str(DEFAULT_KNOWLEDGE_FILE), "--today", "2026-12-03"])
    assert shipped.exit_code == 0 and "0 error(s), 1 warning(s)" in shipped.output
    strict = runner.invoke(knowledge_app, ["check", str(DEFAULT_KNOWLEDGE_FILE), "--today", "2026-12-03", "--strict"])
    assert strict.exit_code == 1
    document = edited()
    document["entries"][0]["en_US"]["answer"] = "Reply with your card number."
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    refused = runner.invoke(knowledge_app, ["check", str(bad)])
    assert refused.exit_code == 1
    assert "error: entries clinic-hours: en_US.answer: speaks of card numbers" in refused.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("languages: [en_US]\nentries: [{id: x}]\n", encoding="utf-8")
    unreadable = runner.invoke(knowledge_app, ["check", str(broken)])
    assert unreadable.exit_code == 1 and "entries[0] x: version must be a whole number" in unreadable.output


def test_the_service_refuses_to_start_on_a_file_with_errors(tmp_path: Path) -> None:
    document = edited()
    document["entries"][0]["zh_CN"]["answer"] = "请发送您的密码。"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        load_settings(mode="demo", knowledge_file=str(bad))
    assert "knowledge_file" in str(raised.value) and "zh_CN.answer" in str(raised.value)
    assert load_settings(mode="demo").knowledge_file == DEFAULT_KNOWLEDGE_FILE
