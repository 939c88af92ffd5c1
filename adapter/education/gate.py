"""The claim-time rule of education messages: never in the quiet hours.

A series item is planned outside the quiet hours (:func:`adapter.education.planner.next_slot`), but a row
held by pacing, a pause or an outage can come due inside them; then it waits for their end, as a notice
does (:func:`adapter.scheduling.notices.quiet_release`). Other keys go to the wrapped gate
(:class:`adapter.scheduling.reminder_gate.ReminderGate`), which :class:`adapter.outbox.claims.ClaimRules`
calls as its ``reminder_gate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from adapter.education.planner import KEY_PREFIX, EducationPolicy
from adapter.scheduling.notices import quiet_release

Gate = Callable[[str, datetime], "datetime | str | None"]


@dataclass(frozen=True)
class EducationGate:
    inner: Gate | None
    policy: EducationPolicy

    def __call__(self, natural_key: str, now: datetime) -> datetime | str | None:
        """None: send now; a datetime: wait until then; a reason: suppress (from the wrapped gate)."""
        if natural_key.startswith(KEY_PREFIX):
            return quiet_release(now, self.policy.zone, self.policy.quiet)
        return self.inner(natural_key, now) if self.inner is not None else None
