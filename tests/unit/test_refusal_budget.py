"""The audit budget for anonymous refusals: the first per source, reason and minute in full, the rest
summarised once per minute, whatever is sent."""

from __future__ import annotations

import pytest

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome
from adapter.security.refusal_budget import RefusalBudget, audit_entries


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


REFUSAL = AuditEntry(kind=Kind.SECURITY_ALERT, action=Action.EXECUTE, outcome=Outcome.SERIOUS_FAILURE,
                     agent="meta", source="192.0.2.7", entity_ref="endpoint/test", detail={"reason": "mismatch"})


def test_a_flood_from_one_source_is_one_entry_in_full_and_one_summary_per_minute() -> None:
    clock = Clock(1_800_000_000.0 // 60 * 60)
    budget = RefusalBudget(clock=clock)
    admitted = [budget.admit("192.0.2.7", "mismatch") for _ in range(5_000)]
    assert [a.in_full for a in admitted].count(True) == 1 and all(not a.summaries for a in admitted)
    clock.now += 61
    nxt = budget.admit("192.0.2.7", "mismatch")
    assert nxt.in_full
    [summary] = nxt.summaries
    assert (summary.refused, summary.sources, summary.busiest_source) == (4_999, 1, "192.0.2.7")
    assert summary.reasons == (("mismatch", 4_999),)
    entries = audit_entries(nxt, REFUSAL)
    assert len(entries) == 2 and entries[0] is REFUSAL
    assert entries[1].detail["refused"] == 4_999 and entries[1].detail["reason"] == "refusals-summarised"
    assert entries[1].kind == REFUSAL.kind and entries[1].entity_ref == REFUSAL.entity_ref


def test_many_sources_are_capped_per_minute_and_counted_beyond_the_cap() -> None:
    clock = Clock()
    budget = RefusalBudget(full_per_minute=20, clock=clock)
    in_full = sum(budget.admit(f"198.51.100.{i}", "missing").in_full for i in range(200))
    assert in_full == 20
    clock.now += 60
    [summary] = budget.drain()
    assert (summary.refused, summary.sources) == (180, 180)
    assert budget.drain() == ()  # a minute is summarised once


def test_a_different_reason_from_the_same_source_is_its_own_first() -> None:
    budget = RefusalBudget(clock=Clock())
    assert budget.admit("192.0.2.7", "wrong_secret").in_full
    assert budget.admit("192.0.2.7", "missing_secret").in_full
    assert not budget.admit("192.0.2.7", "missing_secret").in_full


def test_a_quiet_minute_writes_no_summary() -> None:
    clock = Clock()
    budget = RefusalBudget(clock=clock)
    assert budget.admit(None, "mismatch").in_full
    clock.now += 600
    assert budget.admit(None, "mismatch").summaries == ()


def test_the_budget_refuses_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RefusalBudget(full_per_minute=0)
