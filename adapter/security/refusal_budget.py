"""Keeping the audit trail bounded against anonymous refusals: forged WhatsApp webhooks and EHR
notifications with a missing or wrong channel secret.

Each refusal is a security event worth recording (45 CFR 164.308(a)(1)(ii)(D) information system
activity review; DICOM 110113), but a stranger can send as many as the network carries, and audit
rows are kept for six years. So, per surface (OWASP ASVS 7.2 "log security events" without letting
an attacker fill the log):

- the first refusal for each reason from a source address in each minute is audited in full, as
  before, up to ``full_per_minute`` such firsts a minute;
- every further refusal of that minute (same source and reason, or beyond that cap) is only counted;
- the counts of a finished minute become **one summary entry** — refusals counted, distinct sources,
  the busiest source — written with the next refusal after that minute, or by :meth:`drain`.

So a surface adds at most ``full_per_minute + 1`` audit rows a minute, whatever is sent to it. The
state lives in memory, per process, like :mod:`adapter.security.login_throttle`: a process that
stops loses at most the counts of its last minute (the first refusals of that minute are in full).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from adapter.audit.trail import AuditEntry

MINUTE = 60


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """Refusals of one minute that were counted, not audited one by one."""

    minute_start: float  # epoch seconds
    refused: int
    sources: int
    busiest_source: str | None
    reasons: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Admission:
    """What to record for one refusal: it in full or not, and summaries of minutes now finished."""

    in_full: bool
    summaries: tuple[RefusalSummary, ...]


@dataclass(slots=True)
class _Minute:
    start: float
    audited: set[tuple[str | None, str]] = field(default_factory=set)
    counted: Counter[str | None] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def summary(self) -> RefusalSummary | None:
        refused = sum(self.counted.values())
        if not refused:
            return None
        busiest = self.counted.most_common(1)[0][0]
        return RefusalSummary(self.start, refused, len(self.counted), busiest, tuple(sorted(self.reasons.items())))


class RefusalBudget:
    """Decides, per refusal, whether it is audited in full (thread-safe: refusals are recorded from
    worker threads)."""

    def __init__(self, full_per_minute: int = 20, clock: Callable[[], float] = time.time) -> None:
        if full_per_minute < 1:
            raise ValueError("full_per_minute must be at least 1")
        self.full_per_minute = full_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._minute: _Minute | None = None

    def admit(self, source: str | None, reason: str) -> Admission:
        start = self._clock() // MINUTE * MINUTE
        with self._lock:
            finished = self._roll(start)
            minute = self._minute
            assert minute is not None
            if (source, reason) not in minute.audited and len(minute.audited) < self.full_per_minute:
                minute.audited.add((source, reason))
                return Admission(True, finished)
            minute.counted[source] += 1
            minute.reasons[reason] += 1
            return Admission(False, finished)

    def drain(self) -> tuple[RefusalSummary, ...]:
        """Summaries of the minute that has ended, if it counted any refusal (for a periodic flush)."""
        with self._lock:
            return self._roll(self._clock() // MINUTE * MINUTE)

    def _roll(self, start: float) -> tuple[RefusalSummary, ...]:
        if self._minute is not None and self._minute.start == start:
            return ()
        ended = self._minute.summary() if self._minute is not None else None
        self._minute = _Minute(start)
        return (ended,) if ended is not None else ()


def audit_entries(admission: Admission, refusal: AuditEntry) -> list[AuditEntry]:
    """The audit entries one refusal leads to: itself if in full, then one summary entry per finished
    minute, shaped like the refusal (same kind, agent, outcome and endpoint), the busiest source as
    its source."""
    entries = [refusal] if admission.in_full else []
    for summary in admission.summaries:
        detail: dict[str, str | int] = {
            "reason": "refusals-summarised",
            "minute": datetime.fromtimestamp(summary.minute_start, UTC).isoformat(timespec="minutes"),
            "refused": summary.refused, "sources": summary.sources}
        detail.update({f"refused-{reason}"[:64]: count for reason, count in summary.reasons})
        entries.append(replace(refusal, source=summary.busiest_source, detail=detail))
    return entries
