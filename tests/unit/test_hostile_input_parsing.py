"""What the webhook parser makes of hostile values, and the failed-login throttle's arithmetic: the
pieces the HTTP tests (tests/integration/test_hostile_input_*.py) exercise end to end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter.http.whatsapp_webhook import names_an_outbox_row
from adapter.security.login_throttle import LoginThrottle, Summary
from whatsapp.webhook import WebhookPayloadError, parse_webhook
from whatsapp.webhook.fields import INT32_MAX, clean_text

RECEIVED = 1_750_000_000


def body(value: dict[str, Any], field: str = "messages", time: Any = 1) -> str:
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "1", "time": time, "changes": [{"field": field, "value": value}]}]})


def status(wamid: str = "wamid.A", **fields: Any) -> dict[str, Any]:
    return {"id": wamid, "status": "sent", "timestamp": "1700000000", "recipient_id": "12015550100", **fields}


@pytest.mark.parametrize(("raw", "expected"), [
    ("9" * 30, RECEIVED), (str(INT32_MAX + 1), RECEIVED), ("-1", RECEIVED), (1e300, RECEIVED),
    (str(INT32_MAX), INT32_MAX), ("0", 0), (1700000000.7, 1700000000)])
def test_a_timestamp_outside_the_4_byte_range_becomes_the_time_of_receipt(raw: Any, expected: int) -> None:
    [parsed] = parse_webhook(body({"statuses": [status(timestamp=raw)]}), received_at=RECEIVED).statuses
    assert parsed.timestamp == expected


def test_unreadable_items_are_listed_without_their_content() -> None:
    batch = parse_webhook(body({"statuses": [status("wamid.SECRET-1", timestamp="soon"), status("wamid.OK"),
                                             status("w" * 200)]}))
    assert [s.message_id for s in batch.statuses] == ["wamid.OK"]
    assert batch.skipped == ["entry[0].changes[0].value.statuses[0].timestamp is not Unix seconds",
                             "entry[0].changes[0].value.statuses[2].id is longer than 128 characters"]


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a": ' * 50_000])
def test_nesting_beyond_the_parser_is_a_payload_error(raw: bytes) -> None:
    with pytest.raises(WebhookPayloadError, match="nested too deeply"):
        parse_webhook(raw)


def test_strings_are_storable_text() -> None:
    raw = body({"statuses": [status("wamid.X", biz_opaque_callback_data="cb")],
                "messages": [{"from": "12015550100", "id": "wamid.M", "timestamp": "1", "type": "text",
                              "text": {"body": "a SURR b NUL"}}]})
    batch = parse_webhook(raw.replace("SURR", "\\udc00").replace("NUL", "\\u0000").replace("cb", "c\\ud800"))
    assert batch.messages[0].text == "a \ufffd b \ufffd"
    assert batch.statuses[0].biz_opaque_callback_data == "c\ufffd"
    assert clean_text("\U0001f600 ok") == "\U0001f600 ok"  # a joined pair is a character, kept


def test_numbers_beyond_32_bits_are_unknown() -> None:
    batch = parse_webhook(body({"statuses": [status(status="failed", errors=[{"code": 2**40, "title": "t"}])]}))
    assert batch.statuses[0].errors[0].code is None
    [event] = parse_webhook(body({"event": "APPROVED", "message_template_name": "n", "message_template_language": "en"},
                                 field="message_template_status_update", time=10**30)).template_statuses
    assert event.entry_time is None


def test_template_events_naming_no_storable_template_are_skipped() -> None:
    with pytest.raises(WebhookPayloadError, match="language is longer than 16"):
        parse_webhook(body({"event": "APPROVED", "message_template_name": "n", "message_template_language": "x" * 17},
                           field="message_template_status_update"))


@pytest.mark.parametrize(("callback", "possible"), [
    (None, True), ("outbox:1", True), (f"outbox:{INT32_MAX}", True), (f"someone-else:{10 ** 20}", True),
    (f"outbox:{INT32_MAX + 1}", False), ("outbox:" + "9" * 30, False), ("outbox:\u00b2", False),
    ("outbox:\u0661", False), ("outbox:-1", False)])
def test_callback_data_that_names_no_possible_outbox_row(callback: str | None, possible: bool) -> None:
    assert names_an_outbox_row(callback) is possible


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_blocks_at_the_limit_and_doubles_up_to_the_cap() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window_seconds=60, block_seconds=10, max_block_seconds=25, clock=clock)
    blocks = []
    for _ in range(4):
        verdicts = [throttle.failed("192.0.2.1") for _ in range(3)]
        blocks.append(verdicts[-1].retry_after)
        assert throttle.refuse("192.0.2.1")[0] == verdicts[-1].retry_after
        clock.now += 30
    assert blocks == [10, 20, 25, 25]
    assert throttle.refuse("198.51.100.2") == (None, ())  # another address is not affected


def test_failures_spread_beyond_the_window_do_not_block() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window_seconds=60, clock=clock)
    for _ in range(10):
        assert throttle.failed("192.0.2.1").retry_after is None
        clock.now += 31  # at most two failures in any minute


def test_only_the_first_failure_is_audited_in_full_and_nothing_is_lost_when_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=5, window_seconds=60, max_block_seconds=600, clock=clock)
    assert [throttle.failed("192.0.2.1").audit_in_full for _ in range(3)] == [True, False, False]
    clock.now += 601  # quiet long enough: forgotten, and its uncounted failures summarised
    verdict = throttle.failed("198.51.100.2")
    assert verdict.audit_in_full and verdict.summaries == (Summary("192.0.2.1", 2, 0),)
    assert throttle.failed("192.0.2.1").audit_in_full  # a new start for the forgotten address


def test_memory_is_bounded_and_evicted_counts_are_summarised() -> None:
    throttle = LoginThrottle(max_clients=2, clock=Clock())
    throttle.failed("192.0.2.1")
    throttle.failed("192.0.2.1")
    throttle.failed("192.0.2.2")
    assert throttle.failed("192.0.2.3").summaries == (Summary("192.0.2.1", 1, 0),)


def test_no_address_no_throttle() -> None:
    throttle = LoginThrottle(limit=1, clock=Clock())
    assert all(throttle.failed(None).audit_in_full and throttle.refuse(None) == (None, ()) for _ in range(5))
