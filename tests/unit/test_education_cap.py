"""The education cap and timing (adapter/education/planner.py): at most N education messages per patient in
any rolling 7 days, the next item waiting; never in the quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapter.education.planner import WINDOW, EducationPolicy, fits, next_slot
from mappings.quiet_hours import QuietHours

T0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
NEW_YORK = ZoneInfo("America/New_York")


def crowded(times: list[datetime], cap: int) -> bool:
    """Whether some 7-day window holds more than ``cap`` of ``times`` (checked the slow way)."""
    return any(sum(start <= t < start + WINDOW for t in times) > cap for start in times)


def test_fits_counts_every_rolling_window() -> None:
    assert fits([T0], T0 + timedelta(days=1), cap=2)
    assert not fits([T0, T0 + timedelta(days=1)], T0 + timedelta(days=2), cap=2)
    assert fits([T0, T0 + timedelta(days=1)], T0 + WINDOW, cap=2)
    # A message between two planned ones is crowded by the later one too.
    assert not fits([T0, T0 + timedelta(days=6)], T0 + timedelta(days=3), cap=2)


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_the_next_item_waits_until_the_window_has_room(cap: int) -> None:
    policy, times = EducationPolicy(weekly_cap=cap), []
    for _ in range(10):  # ten items all wanting to go at once
        times.append(next_slot(times, T0, policy))
    assert times[:cap] == [T0] * cap
    assert times[cap] == T0 + WINDOW
    assert not crowded(times, cap)


def test_two_series_share_the_cap() -> None:
    policy = EducationPolicy(weekly_cap=2)
    first: list[datetime] = []
    for n in range(3):  # one topic, weekly
        first.append(next_slot(first, T0 + n * WINDOW, policy))
    both = list(first)
    second = []
    for _ in range(3):  # a second weekly topic subscribed the next day
        due = next_slot(both, (second[-1] + WINDOW) if second else T0 + timedelta(days=1), policy)
        second.append(due)
        both.append(due)
    assert first == [T0, T0 + WINDOW, T0 + 2 * WINDOW]
    assert second[0] == T0 + timedelta(days=1)
    assert not crowded(both, 2)


def test_a_send_that_drifted_by_seconds_does_not_push_a_weekly_series_a_week_on() -> None:
    # Pacing held the first item two seconds: the second, planned a week after the planned first, still fits
    # beside another topic's item (cap 2).
    sent, planned_next = T0 + timedelta(seconds=2), T0 + WINDOW
    assert next_slot([sent, planned_next], T0 + timedelta(minutes=1), EducationPolicy(weekly_cap=2)) == \
        T0 + timedelta(minutes=1)
    # A real third message in the week is still held.
    assert next_slot([sent, T0 + timedelta(days=1)], T0 + timedelta(days=2), EducationPolicy(weekly_cap=2)) == \
        sent + WINDOW


def test_quiet_hours_move_an_item_to_their_end() -> None:
    policy = EducationPolicy(weekly_cap=2, zone=NEW_YORK, quiet=QuietHours(time(21, 0), time(8, 0)))
    late = datetime(2026, 12, 7, 23, 30, tzinfo=NEW_YORK)
    due = next_slot([], late, policy)
    assert due.astimezone(NEW_YORK) == datetime(2026, 12, 8, 8, 0, tzinfo=NEW_YORK)
    # The cap's candidate is in the night: it moves on to the morning, still within the cap.
    earlier = [datetime(2026, 12, 1, 22, 0, tzinfo=UTC)]  # 17:00 in New York
    due = next_slot(earlier, datetime(2026, 12, 2, 12, 0, tzinfo=UTC), EducationPolicy(1, NEW_YORK, policy.quiet))
    assert due.astimezone(NEW_YORK) == datetime(2026, 12, 8, 17, 0, tzinfo=NEW_YORK)
