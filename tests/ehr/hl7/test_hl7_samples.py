"""The public sample messages of two sources (Microsoft FHIR-Converter; node-hl7-complete's NIST,
Cerner, athenahealth and Corepoint samples) parse into the right events and FHIR shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ehr.hl7.config import Hl7Config
from ehr.hl7.events import AppointmentEvent, ResultEvent
from ehr.hl7.mapping import appointment_resource, diagnostic_report_resource, patient_resource
from ehr.hl7.messages import parse_message
from tests.ehr.hl7.conftest import sample, sample_names

ALL = sample_names("fhir-converter") + sample_names("node-hl7-complete")
PLUS_0215 = timezone(timedelta(hours=2, minutes=15))


def test_both_sources_have_siu_and_oru_samples() -> None:
    for source in ("fhir-converter", "node-hl7-complete"):
        names = " ".join(sample_names(source)).lower()
        assert "siu" in names and "oru" in names, source


@pytest.mark.parametrize("name", ALL)
def test_every_public_sample_parses_and_maps(name: str, config: Hl7Config) -> None:
    parsed = parse_message(sample(name), config)
    assert parsed.events and parsed.control_id and parsed.facility
    mapping = config.for_facility(parsed.facility)
    for event in parsed.events:
        if isinstance(event, AppointmentEvent):
            resource = appointment_resource(event, mapping)
            assert resource["identifier"][0]["value"] == event.filler_id
        else:
            resource = diagnostic_report_resource(event, mapping)
            assert resource["identifier"][0]["value"] == event.filler_id
        assert resource["status"]
        assert patient_resource(event.patient)["identifier"][0]["value"] == event.patient.identifier


@pytest.mark.parametrize(("name", "trigger", "status"), [
    ("fhir-converter/SIU-S12-01.hl7", "S12", "booked"),
    ("fhir-converter/SIU-S13-01.hl7", "S13", "booked"),
    ("fhir-converter/SIU-S14-01.hl7", "S14", "booked"),
    ("fhir-converter/SIU-S15-01.hl7", "S15", "cancelled"),
    ("fhir-converter/SIU-S17-01.hl7", "S17", "cancelled"),
    ("fhir-converter/SIU-S26-01.hl7", "S26", "noshow"),
])
def test_fhir_converter_siu_triggers_map_to_appointment_status(name: str, trigger: str, status: str,
                                                               config: Hl7Config) -> None:
    parsed = parse_message(sample(name), config)
    event = parsed.events[0]
    assert isinstance(event, AppointmentEvent)
    assert (parsed.message_type, event.trigger, event.status) == ("SIU", trigger, status)
    assert event.key == ("GHHSFacility", "36996") and event.placer_id == "12345"
    # TQ1-7 wins over SCH-11 and AIS-4; its +0215 offset is kept.
    assert event.start == datetime(2021, 9, 24, 9, 30, tzinfo=PLUS_0215)
    assert event.end == datetime(2021, 9, 24, 10, 20, tzinfo=PLUS_0215)
    assert event.location is not None and event.location.code == "055"
    assert event.patient.identifier_type == "MR" and event.patient.assigner == "test1"
    assert event.patient.phone_use == "CP"  # the cellular repetition, per XTN.3
    resource = appointment_resource(event, config.default)
    assert resource["status"] == status and resource["start"] == "2021-09-24T09:30:00+02:15"
    assert event.terminal is (trigger in ("S15", "S17", "S26"))


def test_corepoint_v23_sample_needs_its_facility_override(config: Hl7Config) -> None:
    parsed = parse_message(sample("node-hl7-complete/corepoint-siu-s14.hl7"), config)
    event = parsed.events[0]
    assert isinstance(event, AppointmentEvent)
    assert event.key == ("CTX", "00331839401")
    # SCH-11.4 ("200803061000 " with a trailing space) in the facility's zone (UTC by default); SCH-9/10 = 20 MIN.
    assert event.start == datetime(2008, 3, 6, 10, 0, tzinfo=UTC)
    assert event.end == datetime(2008, 3, 6, 10, 20, tzinfo=UTC)
    assert (event.filler_status, event.status) == ("ARRIVED", "arrived")
    assert event.patient.phone_use == "PRN"  # a bare v2.3 number in PID-13, the home phone field


@pytest.mark.parametrize(("name", "code", "status"), [
    ("node-hl7-complete/nist-oru-r01-case1.hl7", "F", "final"),
    ("node-hl7-complete/nist-oru-r01-case3.hl7", "C", "corrected"),
    ("node-hl7-complete/athena-oru-r01.hl7", "C", "corrected"),
    ("node-hl7-complete/cerner-oru-r01.hl7", "F", "final"),
    ("fhir-converter/ORU-R01-01.hl7", "F", "final"),
])
def test_oru_samples_become_ready_reports_without_values(name: str, code: str, status: str,
                                                        config: Hl7Config) -> None:
    parsed = parse_message(sample(name), config)
    event = parsed.events[0]
    assert isinstance(event, ResultEvent)
    assert (event.result_status, event.status, event.ready) == (code, status, True)
    resource = diagnostic_report_resource(event, config.for_facility(parsed.facility))
    assert resource["status"] == status
    assert set(resource) == {"resourceType", "identifier", "status", "code", "subject", "meta", "issued"}


def test_no_obx_value_reaches_any_fhir_shape(config: Hl7Config) -> None:
    values = ["Isolated", "850000", "Salmonella", "Bordetella", "Lead BldC", "AMYLASE", "Hepatitis"]
    for name in ALL:
        parsed = parse_message(sample(name), config)
        mapping = config.for_facility(parsed.facility)
        for event in parsed.events:
            if isinstance(event, ResultEvent):
                text = json.dumps([diagnostic_report_resource(event, mapping), patient_resource(event.patient)])
                assert not [v for v in values if v.lower() in text.lower()], name
