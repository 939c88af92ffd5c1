"""When a user wrote, for the 24-hour window: the message's own timestamp, never later than its receipt,
and the receipt when the timestamp is absent or no time (the HTTP run is
tests/integration/test_inbound_window.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from adapter.recipients.contacts import window_open, written_at
from whatsapp.webhook import parse_webhook

RECEIPT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
R = int(RECEIPT.timestamp())


@pytest.mark.parametrize(("stamp", "expected"), [
    (R - 3600, RECEIPT - timedelta(hours=1)),  # an hour in transit: the window runs from when they wrote
    (R, RECEIPT),
    (R + 1, RECEIPT),  # a clock a second ahead
    (R + 30 * 86400, RECEIPT),  # a month ahead
    (2**31 - 1, RECEIPT),  # 2038, the last 32-bit second
    (2**31, RECEIPT), (-1, RECEIPT), (None, RECEIPT)])
def test_the_window_runs_from_the_timestamp_but_never_from_after_the_receipt(stamp: int | None,
                                                                            expected: datetime) -> None:
    assert written_at(stamp, RECEIPT) == expected
    assert not window_open(written_at(stamp, RECEIPT), RECEIPT + timedelta(hours=24, seconds=1))


def test_a_message_without_a_timestamp_is_kept_with_the_time_of_receipt() -> None:
    item = {"from": "12015550142", "id": "wamid.NOTIME", "type": "text", "text": {"body": "hi"}}
    raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messages": [item]}}]}]})
    batch = parse_webhook(raw, received_at=R)
    assert [m.timestamp for m in batch.messages] == [R] and batch.skipped == []
