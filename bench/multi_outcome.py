"""Counting what a multi-instance run sent, on the emulator's record of accepted messages (the ground
truth): per patient's unique fictional number, sent once, lost or sent more than once
(:mod:`bench.multi_instance`)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Protocol

from sqlalchemy import text

from adapter.storage.db import make_engine
from bench.harness import percentile
from bench.pipeline_throughput import Database, _get_json, digits


class _Cluster(Protocol):
    emulator_url: str
    database: Database
    peak_rss: dict[int, float]

    def ensure_alive(self) -> None: ...

    def sample_rss(self) -> None: ...


def in_flight(database: Database) -> int:
    """Outbox rows in flight: sending, or queued and due within a minute (a retry); a resend may still
    come while there are any. Reminders queued for days ahead do not count."""
    engine = make_engine(database.url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(
                "SELECT count(*) FROM outbox WHERE state = 'sending' OR (state = 'queued' "
                "AND due_at <= now() + interval '60 seconds')")).scalar() or 0)
    finally:
        engine.dispose()


def outcome(cluster: _Cluster, event_at: dict[str, float], timeout: float) -> dict[str, Any]:
    """Waits (bounded) until every event's patient got a message and the outbox has nothing in flight
    (a duplicate would come from a row still in flight), then counts sends per patient."""
    wanted = set(event_at)

    def sends() -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for message in (_get_json(f"{cluster.emulator_url}/_emulator/messages?type=template") or {}).get(
                "messages", []):
            who = digits(str((message.get("payload") or {}).get("to") or message.get("wa_id") or ""))
            if who in wanted:
                found.setdefault(who, []).append(float(message["accepted_at"]))
        return found

    deadline = time.monotonic() + timeout
    found = sends()
    while (len(found) < len(wanted) or in_flight(cluster.database)) and time.monotonic() < deadline:
        cluster.ensure_alive()
        cluster.sample_rss()
        time.sleep(0.5)
        found = sends()
    time.sleep(1.0)  # a duplicate would come after the first send: look once more
    found, first = sends(), min(event_at.values())
    cluster.sample_rss()
    latencies = sorted(min(times) - event_at[who] for who, times in found.items())
    last = max((min(times) for times in found.values()), default=first)
    return {"events": len(wanted), "sent": len(found), "lost": len(wanted - set(found)),
            "duplicates": sum(len(times) - 1 for times in found.values()),
            "events_per_s": round(len(found) / max(last - first, 1e-9), 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            "peak_rss_mib": max(cluster.peak_rss.values(), default=None)}
