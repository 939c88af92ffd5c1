"""ehr.patient: the number to message, the template language and the patient reference."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from ehr.patient import ContactResult, NoMobileReason, mobile_number, patient_reference, preferred_language
from tests.mappings.helpers import fixture
from tests.support.examples import EXAMPLES_DIR

TODAY = date(2026, 6, 1)


def example(name: str, resource_type: str = "Patient") -> dict[str, Any]:
    document = json.loads((EXAMPLES_DIR / name).read_text(encoding="utf-8"))
    if document["resourceType"] == resource_type:
        return dict(document)
    return next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == resource_type)


def patient(*telecom: dict[str, Any], communication: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"resourceType": "Patient", "telecom": list(telecom), "communication": communication or []}


@pytest.mark.parametrize(("file", "region", "expected"), [
    # mobile (03) 3410 5613 is not a US number; old entry skipped
    ("r4spec__Patient-example.json", "US", ContactResult.missing(NoMobileReason.INVALID_NUMBER)),
    # in Australia both current numbers are fixed lines, even the one the EHR labels "mobile"
    ("r4spec__Patient-example.json", "AU", ContactResult.missing(NoMobileReason.NOT_MOBILE)),
    # HL7's example writes the Dutch mobile nationally ("06…"): E.164 drops the trunk 0 and adds +31.
    # The expected value is derived from the public example file, so no number is written here.
    ("r4spec__Patient-f001.json", "NL", "nl-mobile-from-example"),
    ("r4spec__Patient-f001.json", "US", ContactResult.missing(NoMobileReason.INVALID_NUMBER)),
    # 555 is not a US area code
    ("r4spec__Patient-genetics-example1.json", "US", ContactResult.missing(NoMobileReason.INVALID_NUMBER)),
    ("uscore__patient-example.json", "US", ContactResult.missing(NoMobileReason.INVALID_NUMBER)),
    # a US home number may be a mobile: the plan says FIXED_LINE_OR_MOBILE
    ("ihe-sched__example-patient.json", "US", ContactResult.found("+13215552222", "home")),
    # telecom entries without a system are not known to be phones
    ("msconv__LAB-ORU-1-expected.json", "US", ContactResult.missing(NoMobileReason.NO_PHONE)),
    # 2222 has an ended period; 12121212 and 7777 are too short
    ("msconv__SIU-S12-01-expected.json", "US", ContactResult.missing(NoMobileReason.INVALID_NUMBER)),
    ("synthea__7b4cf3d5-26bd-4c44-8f45-f11928c63c0e.transaction.json", "US",
     ContactResult.missing(NoMobileReason.INVALID_NUMBER)),
])
def test_example_patients(file: str, region: str, expected: object) -> None:
    patient = example(file)
    if expected == "nl-mobile-from-example":
        national = next(t["value"] for t in patient["telecom"] if t.get("use") == "mobile")
        expected = ContactResult.found("+31" + national.removeprefix("0"), "mobile")
    assert mobile_number(patient, region, today=TODAY) == expected


def test_synthetic_patient_prefers_the_mobile_over_a_better_ranked_sms() -> None:
    result = mobile_number(fixture("synthetic__patient.json"), "US", today=TODAY)
    assert (result.ok, result.e164, result.use, result.reason) == (True, "+12015550123", "mobile", None)


def test_a_contact_result_is_a_number_or_a_reason() -> None:
    missing = ContactResult.missing(NoMobileReason.NOT_MOBILE)
    assert (missing.ok, missing.e164, f"{missing.reason}") == (False, None, "not_mobile")
    with pytest.raises(ValueError, match="either a number or a reason"):
        ContactResult()
    with pytest.raises(ValueError, match="either a number or a reason"):
        ContactResult(e164="+12015550123", reason=NoMobileReason.NO_PHONE)


def test_sms_comes_before_undeclared_numbers_and_rank_orders_within() -> None:
    result = mobile_number(patient(
        {"system": "phone", "value": "201-555-0101"},
        {"system": "sms", "value": "201-555-0102", "rank": 3},
        {"system": "sms", "value": "201-555-0103", "rank": 1},
    ), "US", today=TODAY)
    assert result == ContactResult.found("+12015550103", None)


def test_old_and_ended_numbers_are_skipped() -> None:
    only_past = patient({"system": "phone", "value": "201-555-0101", "use": "old"},
                        {"system": "phone", "value": "201-555-0102", "use": "mobile", "period": {"end": "2026-05"}})
    assert mobile_number(only_past, "US", today=TODAY) == ContactResult.missing(NoMobileReason.NO_CURRENT_PHONE)
    not_yet = patient({"system": "phone", "value": "201-555-0103", "use": "mobile", "period": {"start": "2026-07-01"}})
    assert mobile_number(not_yet, "US", today=TODAY) == ContactResult.missing(NoMobileReason.NO_CURRENT_PHONE)
    ends_this_month = patient({"system": "phone", "value": "201-555-0104", "use": "mobile",
                               "period": {"end": "2026-06"}})
    assert mobile_number(ends_this_month, "US", today=TODAY) == ContactResult.found("+12015550104", "mobile")


def test_numbers_with_country_code_ignore_the_default_region() -> None:
    spanish_mobile = patient({"system": "phone", "value": "+34 612 34 56 78"})
    assert mobile_number(spanish_mobile, "US", today=TODAY) == ContactResult.found("+34612345678", None)
    spanish_landline = patient({"system": "phone", "value": "+34 915 55 01 23", "use": "home"})
    assert mobile_number(spanish_landline, "US", today=TODAY) == ContactResult.missing(NoMobileReason.NOT_MOBILE)


def test_toll_free_labelled_mobile_is_not_taken_and_email_is_no_phone() -> None:
    assert mobile_number(patient({"system": "phone", "value": "888-555-1212", "use": "mobile"}), "US",
                         today=TODAY) == ContactResult.missing(NoMobileReason.NOT_MOBILE)
    assert mobile_number(patient({"system": "email", "value": "x@example.org"}), "US") == ContactResult.missing(
        NoMobileReason.NO_PHONE)
    assert mobile_number({"resourceType": "Patient"}, "US") == ContactResult.missing(NoMobileReason.NO_PHONE)


def language(*codes: str, preferred: str | None = None) -> dict[str, Any]:
    communication: list[dict[str, Any]] = [
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": c}]}} for c in codes]
    for item in communication:
        if item["language"]["coding"][0]["code"] == preferred:
            item["preferred"] = True
    return patient(communication=communication)


@pytest.mark.parametrize(("who", "available", "expected"), [
    (language("es"), ["en_US", "es"], "es"),
    (language("es-MX"), ["en_US", "es"], "es"),
    (language("en-US"), ["en_US", "es"], "en_US"),
    (language("en"), ["en_US", "es"], "en_US"),
    (language("en-GB"), ["en_US", "es"], "en_US"),
    (language("es-MX"), ["es", "es_MX", "en_US"], "es_MX"),
    (language("es-AR"), ["es_MX", "es", "en_US"], "es"),
    (language("nl"), ["en_US", "es"], "en_US"),
    (language("en-US", "es-MX", preferred="es-MX"), ["en_US", "es"], "es"),
    (language("nl", "es"), ["en_US", "es"], "es"),
    (language("nl", "es", "en"), ["es", "en_US"], "es"),
    (patient(), ["en_US", "es"], "en_US"),
])
def test_preferred_language(who: dict[str, Any], available: list[str], expected: str) -> None:
    assert preferred_language(who, available, "en_US") == expected


def test_preferred_language_of_fixture_and_examples() -> None:
    assert preferred_language(fixture("synthetic__patient.json"), ["en_US", "es"], "en_US") == "es"
    assert preferred_language(example("uscore__patient-example.json"), ["en_US", "es"], "en_US") == "es"
    assert preferred_language(example("r4spec__Patient-f001.json"), ["en_US", "es"], "es") == "es"  # nl: fallback
    # code "1" is not a language tag, so the fallback applies
    assert preferred_language(example("msconv__LAB-ORU-1-expected.json"), ["en_US", "es"], "es") == "es"
    # Arabic (preferred, first coding) is unavailable; its second coding, English, matches en_US
    assert preferred_language(example("msconv__SIU-S12-01-expected.json"), ["en_US", "es"], "es") == "en_US"


@pytest.mark.parametrize(("resource", "expected"), [
    ({"resourceType": "Appointment", "participant": [{"actor": {"reference": "Practitioner/1"}},
                                                     {"actor": {"reference": "Patient/42"}}]}, "Patient/42"),
    ({"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "https://ehr.example.org/fhir/Patient/42/_history/3"}}]}, "Patient/42"),
    ({"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "urn:uuid:788660eb-d2c9-4773-abd4-318484673fb2"}}]}, None),
    ({"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "urn:uuid:788660eb", "type": "Patient"}}]}, "urn:uuid:788660eb"),
    ({"resourceType": "Appointment", "participant": [{"actor": {"display": "Walk-in"}}]}, None),
    ({"resourceType": "DiagnosticReport", "subject": {"reference": "Patient/pat2"}}, "Patient/pat2"),
    ({"resourceType": "DiagnosticReport", "subject": {"reference": "Group/103"}}, None),
    ({"resourceType": "DiagnosticReport"}, None),
    ({"resourceType": "Observation", "subject": {"reference": "Patient/1"}}, None),
])
def test_patient_reference(resource: dict[str, Any], expected: str | None) -> None:
    assert patient_reference(resource) == expected


def test_patient_reference_of_examples() -> None:
    assert patient_reference(example("r4spec__Appointment-example.json", "Appointment")) == "Patient/example"
    assert patient_reference(example("msconv__SIU-S12-01-expected.json", "Appointment")) == (
        "Patient/9e909e52-61a1-be50-1878-a12ef8c36346")
    assert patient_reference(example("r4spec__DiagnosticReport-gingival-mass.json", "DiagnosticReport")) is None
