"""The satisfaction survey without the EHR: the shipped Questionnaire, the QuestionnaireResponse an
answer becomes, the list and template messages, and the decide step asking once per fulfilled
appointment (SQLite and PostgreSQL). The EHR write is in tests/integration/test_reminders_e2e.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.outbox.tables import ActionToken, OutboxMessage
from adapter.recipients.consent import OPTED_IN, OPTED_OUT, set_consent
from adapter.scheduling import survey
from adapter.scheduling.decide import attach
from adapter.service import build_service
from adapter.settings import load_settings
from adapter.storage.db import transaction
from portal_links.tokens import token_hash
from tests.support.bodies import body
from tests.support.synthetic import synthetic_appointment, synthetic_patient
from whatsapp.catalogue import TemplateCatalogue

PATIENT_REF = "Patient/p1"


def test_the_shipped_questionnaire_is_valid_r4_with_five_choices() -> None:
    shipped = survey.questionnaire()
    Questionnaire.model_validate(shipped)
    assert [o["valueCoding"]["code"] for o in shipped["item"][0]["answerOption"]] == list(survey.SCORES)
    assert survey.canonical() == f"{shipped['url']}|{shipped['version']}"


def test_an_answer_becomes_a_completed_response_for_the_patient() -> None:
    body = survey.questionnaire_response(PATIENT_REF, "Appointment/a1", "4",
                                         authored=datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    QuestionnaireResponse.model_validate(body)
    assert body["status"] == "completed" and body["questionnaire"] == survey.canonical()
    assert body["subject"] == {"reference": PATIENT_REF} and body["authored"] == "2026-11-26T10:00:00Z"
    answer = body["item"][0]["answer"][0]["valueCoding"]
    assert answer["code"] == "4" and answer["display"] == "Good"
    # The identifier is stable per appointment and does not carry the appointment id.
    again = survey.questionnaire_response(PATIENT_REF, "Appointment/a1", "2")
    assert again["identifier"] == body["identifier"] and "a1" not in body["identifier"]["value"]
    assert survey.questionnaire_response(PATIENT_REF, "Appointment/a2", "4")["identifier"] != body["identifier"]


@pytest.mark.parametrize("score", ["0", "6", "four", ""])
def test_a_score_outside_1_to_5_is_refused(score: str) -> None:
    with pytest.raises(survey.SurveyError, match="1 to 5"):
        survey.questionnaire_response(PATIENT_REF, "Appointment/a1", score)


def test_the_template_matches_the_catalogue_and_has_no_parameters_but_its_button() -> None:
    catalogue = TemplateCatalogue.load()
    for language in ("en_US", "es"):
        template = catalogue.get(survey.SURVEY_TEMPLATE, language)
        assert template is not None and template.body_parameter_count == 0
        assert [b.type for b in template.buttons] == ["QUICK_REPLY"]


def test_the_list_and_template_carry_only_opaque_tokens(engine: Engine) -> None:
    with transaction(engine) as session:
        message = survey.survey_list(session, PATIENT_REF, "Appointment/a1", "es")
        template = survey.survey_template(session, PATIENT_REF, "Appointment/a1", "es")
    rows = message["interactive"]["action"]["sections"][0]["rows"]
    assert [row["title"][0] for row in rows] == list(survey.SCORES)
    payload = template["components"][0]["parameters"][0]["payload"]
    tokens = [row["id"] for row in rows] + [payload]
    # Opaque: 22 URL-safe characters each (secrets.token_urlsafe(16)), all different, none spelling a reference.
    assert len(set(tokens)) == 6 and all(re.fullmatch(r"[A-Za-z0-9_-]{22}", token) for token in tokens)
    assert not any("Appointment" in token or "Patient" in token for token in tokens)
    # A random token contains "a1" by chance in about 3 % of runs, so the short id is looked for around them.
    rest = json.dumps(message)
    for token in tokens:
        rest = rest.replace(token, "<token>")
    assert rest.count("<token>") == 5 and "a1" not in rest and "Patient" not in rest
    with Session(engine) as session:
        found = session.exec(select(ActionToken).where(
            col(ActionToken.token_hash) == token_hash(rows[3]["id"]))).one()
    assert found.action == survey.ANSWER and found.detail == "4" and found.resource_ref == "Appointment/a1"


def fulfilled(number: int, **changes: Any) -> dict[str, Any]:
    resource = synthetic_appointment(PATIENT_REF, appointment_id="a1")
    resource["id"] = "a1"
    return {**resource, **changes, "meta": {"versionId": str(number), "lastUpdated": "2026-11-25T10:00:00Z"}}


def surveys(engine: Engine) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage).where(col(OutboxMessage.rule_id) == survey.RULE_ID)))


def test_a_fulfilled_appointment_is_asked_about_once(engine: Engine) -> None:
    settings = load_settings(mode="demo")
    decider = build_service(settings, engine=engine).decider
    attach(decider, settings)
    with transaction(engine) as session:
        set_consent(session, PATIENT_REF, OPTED_IN, "admin")
    patient = synthetic_patient(number=42, patient_id="p1")
    decider.record(fulfilled(1), patient)  # the confirmation: the number is now on file
    assert surveys(engine) == []
    decider.record(fulfilled(2, status="fulfilled"), None)
    decider.record(fulfilled(3, status="fulfilled", description="notes"), None)  # still fulfilled: no second ask
    decider.record(fulfilled(4, status="arrived"), None)
    decider.record(fulfilled(5, status="fulfilled"), None)  # fulfilled again: once per appointment all the same
    rows = surveys(engine)
    assert len(rows) == 1 and rows[0].natural_key == "survey:Appointment/a1"
    assert body(rows[0], cipher=decider.outbox.cipher)["type"] == "interactive"
    assert body(rows[0], "fallback", decider.outbox.cipher)["template"]["name"] == survey.SURVEY_TEMPLATE


def test_no_survey_without_consent_or_when_turned_off(engine: Engine) -> None:
    settings = load_settings(mode="demo", survey_enabled=False)
    decider = build_service(settings, engine=engine).decider
    attach(decider, settings)
    with transaction(engine) as session:
        set_consent(session, PATIENT_REF, OPTED_IN, "admin")
    decider.record(fulfilled(1), synthetic_patient(number=42, patient_id="p1"))
    decider.record(fulfilled(2, status="fulfilled"), None)
    assert surveys(engine) == []
    decider.surveys = True
    with transaction(engine) as session:
        set_consent(session, PATIENT_REF, OPTED_OUT, "chat")
    decider.record(fulfilled(3, status="arrived"), None)
    decider.record(fulfilled(4, status="fulfilled"), None)
    assert surveys(engine) == []
