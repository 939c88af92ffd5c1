"""Synthetic messages: typed rejections, the per-facility config, phones, languages, statuses, ordering keys."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ehr.hl7 import errors
from ehr.hl7.config import FieldPath, Hl7Config, Hl7ConfigError, load_config
from ehr.hl7.events import AppointmentEvent, ResultEvent
from ehr.hl7.mapping import diagnostic_report_resource, language_tag, patient_resource
from ehr.hl7.messages import parse_message
from ehr.hl7.ordering import is_stale
from ehr.patient import mobile_number
from tests.ehr.hl7.conftest import PHONE, oru, siu


def _appointment(text: str, config: Hl7Config) -> AppointmentEvent:
    event = parse_message(text, config).events[0]
    assert isinstance(event, AppointmentEvent)
    return event


@pytest.mark.parametrize(("text", "error", "code", "location"), [
    (siu(pid=False), errors.MissingSegmentError, "100", "PID"),
    (siu(filler=""), errors.MissingFieldError, "101", "SCH-2"),
    (siu(start=""), errors.MissingFieldError, "101", "TQ1-7.1.1"),
    (siu(sent=""), errors.MissingFieldError, "101", "MSH-7"),
    (siu(sent="2026-12-01"), errors.InvalidFieldError, "102", "MSH-7"),
    (siu(control_id=""), errors.MissingFieldError, "101", "MSH-10"),
    (siu("S16"), errors.UnsupportedEventError, "201", "MSH-9"),
    (siu().replace("SIU^S12", "ADT^A01"), errors.UnsupportedMessageError, "200", "MSH-9"),
    (oru(pid=False), errors.MissingSegmentError, "100", "PID"),
    (oru(filler=""), errors.MissingFieldError, "101", "OBR-3"),
    (oru(status=""), errors.MissingFieldError, "101", "OBR-25"),
    ("PID|1||X", errors.Hl7SyntaxError, "100", "MSH"),
    ("", errors.Hl7SyntaxError, "100", "MSH"),
])
def test_rejections_are_typed_with_the_ack_code_and_location(text: str, error: type[errors.Hl7MessageError],
                                                             code: str, location: str, config: Hl7Config) -> None:
    with pytest.raises(error) as caught:
        parse_message(text, config)
    assert (caught.value.code, caught.value.location) == (code, location)
    assert "SYNTHETIC" not in str(caught.value) and "SYN-MRN" not in str(caught.value)


def test_error_texts_never_echo_free_text(config: Hl7Config) -> None:
    with pytest.raises(errors.UnsupportedMessageError, match=r"message type \(unreadable\)"):
        parse_message(siu().replace("SIU^S12", "Jane Doe^S12"), config)
    with pytest.raises(errors.UnsupportedEventError, match=r"SIU\^S16 is not taken"):
        parse_message(siu("S16"), config)


def test_a_cancellation_needs_no_start_time(config: Hl7Config) -> None:
    event = _appointment(siu("S15", start=""), config)
    assert (event.status, event.start, event.terminal) == ("cancelled", None, True)


def test_lf_and_crlf_terminators_are_accepted(config: Hl7Config) -> None:
    for terminator in ("\n", "\r\n"):
        assert _appointment(siu().replace("\r", terminator), config).filler_id == "APT-1"


def test_phone_preference_follows_the_facility_config(config: Hl7Config) -> None:
    event = _appointment(siu(), config)
    assert (event.patient.phone, event.patient.phone_use) == (PHONE, "CP")
    assert mobile_number(patient_resource(event.patient), "US").e164 == PHONE
    home_first = load_config({"default": {"phone_preference": ["PRN", "CP"]}})
    assert _appointment(siu(), home_first).patient.phone == "2015550199"
    assert _appointment(siu(phones=""), config).patient.phone is None


def test_event_repr_carries_no_identifier_or_phone(config: Hl7Config) -> None:
    event = _appointment(siu(), config)
    assert "SYN-MRN-7" not in repr(event) and "5550123" not in repr(event)
    assert "SYNTHETIC" not in repr(parse_message(siu(), config))


def test_language_codes_become_bcp47_tags() -> None:
    assert [language_tag(c) for c in ("spa", "EN", "zh_TW", "ZHO", None)] == ["es", "en", "zh-tw", "zh", None]


def test_timestamps_without_offset_use_the_facility_zone() -> None:
    config = load_config({"facilities": {"SYNFAC": {"timezone": "America/Chicago"}}})
    event = _appointment(siu(), config)
    assert event.start == datetime(2026, 12, 15, 10, 30, tzinfo=ZoneInfo("America/Chicago"))
    assert event.start.astimezone(UTC).hour == 16


def test_positions_are_configurable_per_facility() -> None:
    text = siu(start="") + "ZSC|1|20261220081500\r"
    config = load_config({"facilities": {"SYNFAC": {"start": ["ZSC-2"], "filler_id": "SCH-1"}}})
    event = _appointment(text, config)
    assert event.start == datetime(2026, 12, 20, 8, 15, tzinfo=UTC)
    assert event.key == ("SYNFAC", "PL-APT-1")


def test_filler_status_refines_a_booking_but_never_a_cancellation(config: Hl7Config) -> None:
    assert _appointment(siu(status="Pending"), config).status == "pending"
    assert _appointment(siu(status="Complete"), config).status == "fulfilled"
    assert _appointment(siu("S15", status="Booked"), config).status == "cancelled"
    assert _appointment(siu("S26", status="Booked"), config).status == "noshow"


def test_only_f_c_a_results_are_ready(config: Hl7Config) -> None:
    for code, ready in (("F", True), ("C", True), ("A", True), ("P", False), ("I", False), ("X", False)):
        event = parse_message(oru(code), config).events[0]
        assert isinstance(event, ResultEvent) and event.ready is ready, code
        resource = diagnostic_report_resource(event, config.default)
        assert resource["status"] == (event.status or "registered")
        assert "SECRET-RESULT-VALUE" not in str(resource)


def test_one_result_event_per_obr_with_its_own_filler_id(config: Hl7Config) -> None:
    text = oru() + "OBR|" + "|".join(["2", "", "RPT-2^SYNLAB", *[""] * 21, "C"]) + "\r"  # OBR-25 = C
    events = parse_message(text, config).events
    assert [(e.key, e.status) for e in events if isinstance(e, ResultEvent)] == [
        (("SYNLABFAC", "RPT-1"), "final"), (("SYNLABFAC", "RPT-2"), "corrected")]


def test_dedupe_and_ordering_keys(config: Hl7Config) -> None:
    parsed = parse_message(siu(control_id="C-77", sent="20261201091500"), config)
    assert parsed.dedupe_key == ("SYNFAC", "C-77")
    assert parsed.message_time == datetime(2026, 12, 1, 9, 15, tzinfo=UTC)
    assert parsed.events[0].key == ("SYNFAC", "APT-1")


def test_config_errors_name_the_facility_and_setting() -> None:
    with pytest.raises(Hl7ConfigError) as caught:
        load_config({"facilities": {"EPIC1": {"start": ["TQ1/7"], "timezone": "Nowhere/Else",
                                              "ready_statuses": {"Q": "final"}, "phone_preference": []}}})
    text = str(caught.value)
    for needle in ("facility 'EPIC1': start.0", "facility 'EPIC1': timezone", "facility 'EPIC1': ready_statuses",
                   "facility 'EPIC1': phone_preference"):
        assert needle in text
    with pytest.raises(Hl7ConfigError, match="unknown keys"):
        load_config({"facility": {}})
    assert FieldPath.parse("PID-3.4.2") == FieldPath("PID", 3, 4, 2)
    with pytest.raises(ValueError, match="not a field position"):
        FieldPath.parse("PID-0")


def test_out_of_order_messages_are_ordered_by_msh7_then_trigger(config: Hl7Config) -> None:
    booked = _appointment(siu("S12", control_id="O-1", sent="20261201090000"), config)
    moved = _appointment(siu("S13", control_id="O-2", sent="20261201091000"), config)
    cancelled_same_instant = _appointment(siu("S15", control_id="O-3", sent="20261201091000"), config)
    assert not is_stale(booked, None)
    assert is_stale(booked, moved)  # the booking arrived after its reschedule
    assert not is_stale(moved, booked)
    assert is_stale(moved, cancelled_same_instant) and not is_stale(cancelled_same_instant, moved)
    other = _appointment(siu("S12", filler="APT-2"), config)
    with pytest.raises(ValueError, match="different appointments"):
        is_stale(other, booked)
