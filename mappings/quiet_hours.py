"""Quiet hours: the local-time window in which no reminder starts (setting ``quiet_hours``, ``HH:MM-HH:MM``).

A pure value of the reminder-timing policy, beside the rules' reminder offsets (DESIGN.md: reminders are
outbox rows with a ``due_at``). The settings check the text at start-up with :meth:`QuietHours.parse`; the
reminder plan (``adapter.scheduling.reminders.due_time``) moves a reminder out of the window, and the claim-time
gate (``adapter.scheduling.reminder_gate``) holds one that comes due inside it. The window may wrap midnight
(``21:00-08:00``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

_QUIET = re.compile(r"^\s*([01]?[0-9]|2[0-3]):([0-5][0-9])\s*-\s*([01]?[0-9]|2[0-3]):([0-5][0-9])\s*$")


class QuietHoursError(ValueError):
    """The quiet-hours setting is not ``HH:MM-HH:MM``."""


@dataclass(frozen=True)
class QuietHours:
    """No message starts strictly inside ``(begin, end)`` local time; wraps midnight when begin > end."""

    begin: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        match = _QUIET.match(text)
        if match is None:
            raise QuietHoursError(f"quiet hours {text!r} must look like 21:00-08:00 (24-hour clock, local time)")
        begin = time(int(match.group(1)), int(match.group(2)))
        end = time(int(match.group(3)), int(match.group(4)))
        if begin == end:
            raise QuietHoursError(f"quiet hours {text!r} start and end at the same time; leave the setting empty "
                                  "for no quiet hours")
        return cls(begin, end)

    def contains(self, moment: time) -> bool:
        if self.begin < self.end:
            return self.begin < moment < self.end
        return moment > self.begin or moment < self.end
