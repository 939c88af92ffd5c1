"""Polling (ehr.polling + adapter.feeds.polling.poll_once) against a real sekmet server and both databases.

The server is this module's own (so a poll sees only what these tests write). Equal and late
timestamps are what a busy EHR produces: several commits in the same millisecond, and a
transaction that commits after a poll but carries an older ``meta.lastUpdated``. sekmet stamps
every write with its own clock, so :func:`stamp` rewrites a stored version's timestamp in the
server's own database, as such an EHR would have stored it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.feeds.health import feed_health
from adapter.feeds.polling import poll_once, polled_feeds
from adapter.feeds.tables import FeedState, InboxEvent
from ehr.client import FhirClient
from ehr.polling import PollFeed, format_instant, parse_instant, poll_since
from ehr.subscriptions import DEFAULT_SUBSCRIPTION_SPECS
from tests.support.fhir_server import RunningFhirServer, free_port

pytestmark = pytest.mark.fhir
LAG = timedelta(seconds=120)
APPOINTMENTS = PollFeed("appointment", "Appointment")


def appointment(status: str = "booked") -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": status, "start": "2030-01-15T09:00:00Z",
            "end": "2030-01-15T09:30:00Z",
            "participant": [{"actor": {"reference": "Patient/example-1"}, "status": "accepted"}]}


def stamp(server: RunningFhirServer, resource: dict[str, Any], instant: str) -> dict[str, Any]:
    """Sets the stored current version's ``meta.lastUpdated`` (and the ``_lastUpdated`` index)."""
    from sekmet.fhir.indexer import extract

    rtype, rid, version = resource["resourceType"], resource["id"], int(resource["meta"]["versionId"])
    changed = {**resource, "meta": {**resource["meta"], "lastUpdated": instant}}
    body = json.dumps(changed, separators=(",", ":"))
    connection = sqlite3.connect(Path(server.data_dir) / "sekmet.db", timeout=30)
    try:
        with connection:
            connection.execute("UPDATE resources SET json=?, last_updated=? WHERE type=? AND id=?",
                               (body, instant, rtype, rid))
            connection.execute("UPDATE versions SET json=?, last_updated=? WHERE type=? AND id=? AND version=?",
                               (body, instant, rtype, rid, version))
            connection.execute("DELETE FROM idx WHERE type=? AND id=?", (rtype, rid))
            connection.executemany(
                "INSERT INTO idx(type,id,param,s,sys,code,rtype,rid,lo,hi,num) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(rtype, rid, r.param, r.s, r.sys, r.code, r.rtype, r.rid, r.lo, r.hi, r.num)
                 for r in extract(changed)])
    finally:
        connection.close()
    return changed


def inbox(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [row.dedupe_key for row in session.exec(select(InboxEvent).order_by(col(InboxEvent.id)))]


def polls_audited(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "patient-query")
                            .order_by(col(AuditEvent.id)))
        return [json.loads(row.detail or "{}") for row in rows]


def ref(resource: dict[str, Any]) -> str:
    return f"Appointment/{resource['id']}/_history/{resource['meta']['versionId']}"


async def test_equal_timestamps_and_a_late_commit_are_each_processed_exactly_once(
    engine: Engine, ehr: FhirClient, own_server: RunningFhirServer
) -> None:
    [started] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=LAG)
    assert (started.status, started.new) == ("started", 0)
    await asyncio.sleep(1.1)  # the late commit below is stamped 1 s before the others, after polling began

    first = [await ehr.create(appointment()) for _ in range(3)]
    same = first[0]["meta"]["lastUpdated"]
    first = [stamp(own_server, resource, same) for resource in first]  # three commits, one millisecond
    [polled] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=LAG)
    assert (polled.status, polled.found, polled.new) == ("ok", 3, 3)

    # Committed after that poll: one with the same timestamp, one older than the watermark (in the lag).
    equal = stamp(own_server, await ehr.create(appointment()), same)
    late = stamp(own_server, await ehr.create(appointment()),
                 format_instant(parse_instant(same) - timedelta(seconds=1)))
    [polled] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=LAG)
    assert (polled.found, polled.new) == (5, 2)  # the window is re-read; only the two unseen are new
    [again] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=LAG)
    assert (again.found, again.new) == (5, 0)

    changed = await ehr.update({**first[1], "status": "arrived"})
    [polled] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=LAG)
    assert polled.new == 1

    assert inbox(engine) == [ref(r) for r in [*first, late, equal, changed]]  # sorted by _lastUpdated
    with Session(engine) as session:
        state = session.get(FeedState, "poll:appointment")
        assert state is not None
        assert state.watermark == changed["meta"]["lastUpdated"]  # the server's clock, not ours
        rows = session.exec(select(InboxEvent)).all()
        assert {row.subscription_key for row in rows} == {"poll:appointment"}
        assert all(row.state == "pending" and row.kind == "resource" for row in rows)
    audited = polls_audited(engine)
    assert [entry["step"] for entry in audited] == ["poll-start"] + ["poll"] * 4
    assert [entry.get("results") for entry in audited[1:]] == [3, 5, 5, 5]
    assert all("ge" not in entry["params"] and "_lastUpdated" in entry["params"] for entry in audited[1:])


async def test_every_page_is_followed_to_the_end(engine: Engine, ehr: FhirClient) -> None:
    await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=timedelta(0))
    await asyncio.sleep(0.01)
    created = [await ehr.create(appointment()) for _ in range(25)]

    [polled] = await poll_once(engine, ehr, [APPOINTMENTS], safety_lag=timedelta(0), page_size=10)

    assert (polled.found, polled.new) == (25, 25)
    assert sorted(inbox(engine)) == sorted(ref(resource) for resource in created)


async def test_a_cancellation_made_in_the_ehr_arrives_as_an_event(engine: Engine, ehr: FhirClient) -> None:
    [feed] = polled_feeds("both", DEFAULT_SUBSCRIPTION_SPECS[:1])
    assert feed.criteria == "Appointment"  # every status, not status=booked: cancellations are changes too
    await poll_once(engine, ehr, [feed], safety_lag=LAG)
    await asyncio.sleep(0.01)
    booked = await ehr.create(appointment())
    await poll_once(engine, ehr, [feed], safety_lag=LAG)

    cancelled = await ehr.update({**booked, "status": "cancelled"})
    woken: list[bool] = []
    [polled] = await poll_once(engine, ehr, [feed], safety_lag=LAG, on_new=lambda: woken.append(True))

    assert polled.new == 1 and woken == [True]
    assert inbox(engine) == [ref(booked), ref(cancelled)]
    assert (await ehr.read("Appointment", booked["id"]))["status"] == "cancelled"


async def test_an_unreachable_ehr_is_reported_and_nothing_moves(engine: Engine) -> None:
    async with FhirClient(f"http://127.0.0.1:{free_port()}/fhir", timeout_seconds=2) as down:
        [failed] = await poll_once(engine, down, [APPOINTMENTS], safety_lag=LAG)

    assert (failed.status, failed.error) == ("failed", "FhirUnavailableError")
    [health] = feed_health(engine)
    assert (health.feed, health.kind, health.status, health.healthy) == ("poll:appointment", "poll", "failing", False)
    assert health.last_error == "FhirUnavailableError" and health.watermark is None and health.last_ok_at is None
    assert inbox(engine) == []
    assert [entry["step"] for entry in polls_audited(engine)] == ["poll-start"]


def test_the_window_reaches_back_by_the_lag_but_not_before_polling_began() -> None:
    assert poll_since("2030-01-01T10:00:00.000Z", None, timedelta(seconds=90)) == "2030-01-01T09:58:30.000Z"
    assert poll_since("2030-01-01T10:00:00+02:00", "2030-01-01T07:59:00Z",
                      timedelta(minutes=5)) == "2030-01-01T07:59:00.000Z"
    filtered = PollFeed("results", "DiagnosticReport?status=final&_format=json")
    assert (filtered.resource_type, filtered.filters, filtered.inbox_key) == (
        "DiagnosticReport", [("status", "final")], "poll:results")


def test_the_cli_polls_now_and_reports_feed_status(
    own_server: RunningFhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from adapter.cli.feeds import feeds_app

    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'bridge.db'}")
    monkeypatch.setenv("BRIDGE_FHIR_BASE_URL", own_server.base_url)
    monkeypatch.setenv("BRIDGE_RECONCILE_INTERVAL_SECONDS", "0")
    runner = CliRunner()
    refused = runner.invoke(feeds_app, ["poll-now"])
    assert refused.exit_code == 1 and "polls nothing" in refused.output
    assert "no feed has run yet" in runner.invoke(feeds_app, ["status"]).output

    monkeypatch.setenv("BRIDGE_FEED_MODE", "polling")
    first = runner.invoke(feeds_app, ["poll-now"])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == ["appointment\tstarted\tfound 0\tqueued 0",
                                         "diagnostic-report\tstarted\tfound 0\tqueued 0"]
    status = runner.invoke(feeds_app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    rows = [json.loads(line) for line in status.output.splitlines()]
    assert [(row["feed"], row["status"], row["healthy"]) for row in rows] == [
        ("poll:appointment", "ok", True), ("poll:diagnostic-report", "ok", True)]

    monkeypatch.setenv("BRIDGE_FHIR_BASE_URL", f"http://127.0.0.1:{free_port()}/fhir")
    down = runner.invoke(feeds_app, ["poll-now"])
    assert down.exit_code == 1 and "failed\tfound 0\tqueued 0\tFhirUnavailableError" in down.output
    unhealthy = runner.invoke(feeds_app, ["status"])
    assert unhealthy.exit_code == 1 and "UNHEALTHY" in unhealthy.output


def test_feed_settings_are_checked_with_messages_an_admin_understands() -> None:
    from adapter.settings import SettingsError, load_settings

    assert load_settings(mode="demo").feed_mode == "subscriptions"
    with pytest.raises(SettingsError) as refused:
        load_settings(mode="demo", feed_mode="poll", poll_interval_seconds=1)
    text = str(refused.value)
    assert "BRIDGE_FEED_MODE" in text and "'subscriptions', 'polling' or 'both'" in text
    assert "BRIDGE_POLL_INTERVAL_SECONDS" in text and "greater than or equal to 5" in text


def test_a_timestamp_that_is_not_an_instant_never_becomes_the_watermark() -> None:
    from ehr.polling import later

    assert later(None, "2030-01-01T10:00:00Z") == "2030-01-01T10:00:00Z"
    assert later("2030-01-01T10:00:00Z", "2030-01-01T11:00:00+02:00") == "2030-01-01T10:00:00Z"
    with pytest.raises(ValueError):
        later(None, "yesterday")
