"""The PHI guard on its own: what it blocks, what it lets through, and that it never repeats the value."""

from __future__ import annotations

from typing import Any

import pytest

from mappings.errors import PhiLeakError
from mappings.phi_guard import IdentifyingStrings, check, identifying_strings, normalise
from tests.mappings.helpers import fixture

TOKEN = "mK3v9QxT0bLr7Yh2Wc5Zp8Nd4Fs6Gj1Ua-Ee_Ii0Oo"


def message(*texts: str, payload: str = TOKEN, language: str = "en_US") -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    if texts:
        components.append({"type": "body", "parameters": [{"type": "text", "text": t} for t in texts]})
    components.append({"type": "button", "sub_type": "quick_reply", "index": "0",
                       "parameters": [{"type": "payload", "payload": payload}]})
    return {"name": "appointment_confirmation", "language": {"code": language}, "components": components}


@pytest.fixture(scope="module")
def synthetic() -> IdentifyingStrings:
    return identifying_strings(fixture("synthetic__appointment-pending.json"), fixture("synthetic__patient.json"),
                               [fixture("synthetic__practitioner.json"), fixture("synthetic__location-north.json")])


def blocked(template: dict[str, Any], identifying: frozenset[str], **kwargs: Any) -> PhiLeakError:
    with pytest.raises(PhiLeakError) as caught:
        check(template, identifying, **kwargs)
    return caught.value


@pytest.mark.parametrize(("leak", "category"), [
    ("Synthetic Testpatient", "name"),
    ("Testpatient, Synthetic", "name"),
    ("Ms. Synthetic Quinta Testpatient", "name"),
    ("dear SYNTHETIC   testpatient!", "name"),
    ("Quinta", "name"),
    ("SYN-0000123", "identifier"),
    ("ssn 900550123", "identifier"),
    ("May 17, 1980", "birth_date"),
    ("17 de mayo de 1980", "birth_date"),
    ("05/17/1980", "birth_date"),
    ("1980-05-17", "birth_date"),
    ("(201) 555-0123", "telecom"),
    ("+12015550123", "telecom"),
    ("call 201.555.0142", "telecom"),
    ("synthetic.testpatient", "telecom"),
    ("101 Synthetic Lane", "address"),
    ("Fixtureville", "address"),
    ("Medical oncology", "code"),
    ("Synthetic oncology follow-up", "code"),
    ("Dr Synthetic Clinician", "display"),
    ("Synthetic North Oncology Pavilion", "display"),  # seen first as the participant's display
    ("Bring the synthetic medication list.", "note"),
    ("Testrelative", "name"),
])
def test_identifying_text_in_the_body_is_blocked(synthetic: IdentifyingStrings, leak: str, category: str) -> None:
    error = blocked(message("Tuesday, December 1, 2026", leak), synthetic)
    assert error.field_path == "components[0].parameters[1].text"
    assert error.category == category
    for said in (str(error), repr(error), *map(str, error.args), *map(str, vars(error).values())):
        assert normalise(leak) not in normalise(said)


def test_identifying_text_in_a_payload_or_url_suffix_is_blocked(synthetic: IdentifyingStrings) -> None:
    error = blocked(message(payload="SYN-0000123"), synthetic)
    assert (error.field_path, error.category) == ("components[0].parameters[0].payload", "identifier")
    template = message()
    template["components"].append({"type": "button", "sub_type": "url", "index": "1",
                                   "parameters": [{"type": "text", "text": "synthetic-appt-pending"}]})
    assert blocked(template, synthetic).field_path == "components[1].parameters[0].text"


@pytest.mark.parametrize("texts", [
    ("Tuesday, December 1, 2026", "10:30 AM", "North Campus"),
    ("martes, 1 de diciembre de 2026", "10:30", "Sede Central"),
    ("Sunday, May 17, 2026", "5:17 PM", "Main Campus"),  # the birthday without the birth year is no leak
])
def test_dates_times_labels_and_tokens_pass(synthetic: IdentifyingStrings, texts: tuple[str, ...]) -> None:
    check(message(*texts, language="es" if "martes" in texts[0] else "en_US"), synthetic)


def test_template_name_and_language_are_not_outgoing_values() -> None:
    identifying = identifying_strings({"resourceType": "Appointment", "description": "appointment_confirmation"}, None)
    check(message(), identifying)


def test_matches_respect_word_boundaries() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["Anna"], "family": "Berg"}]}
    identifying = identifying_strings(patient, None)
    check(message(payload="xAnnaqBergz1234567"), identifying)
    assert blocked(message(payload="x-Anna-q"), identifying).category == "name"


def test_short_strings_and_short_numbers_are_ignored_by_design() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["Li"], "family": "Ng"}],
               "identifier": [{"value": "2026"}], "telecom": [{"system": "phone", "value": "1111"}]}
    check(message("Tuesday, December 1, 2026", "Dr Li", "Ng Clinic"), identifying_strings(patient, None))
    # …but the full name is long enough to count
    assert blocked(message("Li Ng"), identifying_strings(patient, None)).category == "name"


def test_calendar_words_are_not_names_but_full_names_still_are() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["June"], "family": "Berg"}]}
    identifying = identifying_strings(patient, None)
    check(message("Monday, June 1, 2026"), identifying)
    check(message("lunes, 1 de junio de 2026", language="es"), identifying)
    assert blocked(message("June Berg"), identifying).category == "name"
    # only the message language's words are exempt: "June" is a name in a Spanish message
    assert blocked(message("June", language="es"), identifying).category == "name"


def test_a_value_that_is_a_public_site_label_passes_but_a_label_shields_nothing_else() -> None:
    location = {"resourceType": "Location", "name": "South Wing, second floor", "physicalType": {
        "coding": [{"code": "wi", "display": "Wing"}]}}
    identifying = identifying_strings({"resourceType": "Appointment"}, None, [location])
    assert blocked(message("South Wing"), identifying).category == "code"
    check(message("Tuesday, December 1, 2026", "south  WING"), identifying, public=["South Wing"])
    assert blocked(message("South Wing, second floor"), identifying, public=["South Wing"]).category == "name"
    assert blocked(message("South Wing Wing"), identifying, public=["South Wing"]).category == "code"


def test_accents_and_case_do_not_hide_a_name() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["José"], "family": "Núñez"}]}
    assert blocked(message("jose NUNEZ"), identifying_strings(patient, None)).category == "name"


def test_structural_strings_are_not_identifying() -> None:
    identifying = identifying_strings(fixture("synthetic__appointment-pending.json"),
                                      fixture("synthetic__patient.json"))
    for structural in ("booked", "pending", "needs-action", "official", "female", "http://snomed.info/sct", "mobile"):
        assert normalise(structural) not in identifying
    assert "u3ludghldgljihjlcg9ydcb0zxh0" not in identifying_strings(
        fixture("synthetic__diagnosticreport-amended.json"), None)


def test_plain_frozensets_work_with_an_unknown_category() -> None:
    error = blocked(message("hello Synthetic Testpatient"), frozenset({"synthetic testpatient"}))
    assert error.category == "other"
