"""The reminder rules that must hold when a reminder is sent, not only when it was planned.

A reminder is planned with a ``due_at`` outside the quiet hours and before the appointment
(:func:`adapter.scheduling.reminders.due_time`); but if the service was down, or pacing held the row, it can
come due later. At claim time (:class:`adapter.outbox.claims.ClaimRules.reminder_gate`): a reminder
whose appointment has started is suppressed; one that comes due inside the quiet hours waits for
their end if that is still before the start, else it is suppressed — never a message in the night.
A notice (:mod:`adapter.scheduling.notices`) that comes due inside the quiet hours waits for their end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from adapter.scheduling.notices import is_notice_key, quiet_release
from adapter.scheduling.reminders import ReminderPolicy, parse_key

Verdict = datetime | Literal["appointment_started", "quiet_until_start"] | None


@dataclass(frozen=True)
class ReminderGate:
    policy: ReminderPolicy

    def __call__(self, natural_key: str, now: datetime) -> Verdict:
        """None: send now; a datetime: wait until then; a reason: suppress."""
        parsed = parse_key(natural_key)
        if parsed is None:  # not a reminder: a notice waits out the quiet hours, anything else goes
            return quiet_release(now, self.policy.zone, self.policy.quiet) if is_notice_key(natural_key) else None
        _, start, _ = parsed
        if now >= start:
            return "appointment_started"
        end = quiet_release(now, self.policy.zone, self.policy.quiet)
        if end is None:
            return None
        return end if end < start else "quiet_until_start"
