"""Several instances on one database: the leader lock (PostgreSQL), SQLite's one-instance guard, leases
that free a dead instance's work, and the pair-interval check under concurrent claims."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.audit.tables import AuditEvent
from adapter.feeds.inbox import InboxStore
from adapter.ops.instances import Leadership, hold_instance, sqlite_lock_path
from adapter.outbox.batch_writes import take_paces
from adapter.outbox.claims import ClaimRules
from adapter.outbox.dispatch import Dispatcher, RetryPolicy
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.settings import Settings, SettingsError, load_settings
from adapter.storage.db import make_engine, transaction, utcnow
from ehr.notifications import IncomingNotification
from tests.support.stores import contact_book, outbox_store
from whatsapp.sender import SendResult


def _leadership(engine: Engine) -> Leadership:
    return Leadership(engine, recheck_seconds=0)


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_leader_at_a_time_and_another_takes_over_when_it_dies(pg_engine: Engine) -> None:
    other_engine = make_engine(pg_engine.url.render_as_string(hide_password=False))  # another process's pool
    first, second = _leadership(pg_engine), _leadership(other_engine)
    try:
        assert first.is_leader() is True
        assert second.is_leader() is False
        assert first.is_leader() is True  # still holding it on the next tick
        # The leader's session dies (as on SIGKILL): PostgreSQL releases its advisory lock.
        with other_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND objid = :low AND granted AND database = (SELECT oid FROM pg_database "
                               "WHERE datname = current_database())"), {"low": first.key & 0xFFFFFFFF})
        assert _eventually(second.is_leader)  # the terminated backend exits (and lets go) a moment later
        assert first.is_leader() is False  # its connection is gone, and with it the lock
        assert first.is_leader() is False  # and it does not take it back while the other holds it
        second.release()  # a clean shutdown steps down at once
        assert first.is_leader() is True
    finally:
        first.release()
        second.release()
        other_engine.dispose()


def test_sqlite_is_always_its_own_leader(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bridge.db'}")
    assert Leadership(engine).is_leader() is True
    engine.dispose()


_SECOND_PROCESS = textwrap.dedent("""
    import sys
    from adapter.ops.instances import SingleInstanceError, hold_instance
    try:
        hold_instance(sys.argv[1])
    except SingleInstanceError as error:
        print(error)
        sys.exit(3)
    print("started")
""")


def _second_process(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _SECOND_PROCESS, url], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])


def test_a_second_process_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    guard = hold_instance(url)
    again = hold_instance(url)  # a second app in the same process (tests, the demo) shares the claim
    try:
        refused = _second_process(url)
        assert refused.returncode == 3, refused.stderr
        assert "SQLite runs one instance" in refused.stdout and "PostgreSQL" in refused.stdout
        assert "bridge.db" in refused.stdout
        again.release()
        assert _second_process(url).returncode == 3  # still held by the first claim
    finally:
        guard.release()
    assert _second_process(url).stdout.strip() == "started"  # released: the next process may start
    assert sqlite_lock_path(url) == (tmp_path / "bridge.db.instance-lock").resolve()


def test_postgresql_and_in_memory_sqlite_need_no_guard(postgres_url: str) -> None:
    assert sqlite_lock_path(postgres_url) is None
    assert sqlite_lock_path("sqlite://") is None
    hold_instance(postgres_url).release()


def test_settings_refuse_several_instances_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_INSTANCE_COUNT", "3")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", "sqlite:///./bridge.db")
    with pytest.raises(SettingsError, match="SQLite runs one instance"):
        load_settings()
    monkeypatch.setenv("BRIDGE_DATABASE_URL", "postgresql+psycopg://bridge@db.example.org/bridge")
    assert load_settings().instance_count == 3


def test_lease_settings_have_sane_bounds() -> None:
    with pytest.raises(ValueError, match="inbox_lease_seconds"):
        Settings(mode="demo", inbox_lease_seconds=0)
    assert Settings(mode="demo").send_lease_seconds == 120.0


def test_a_dead_instances_inbox_claim_returns_after_its_lease(engine: Engine) -> None:
    dying, survivor = InboxStore(engine, lease=timedelta(seconds=5)), InboxStore(engine)
    survivor.accept([IncomingNotification(kind="resource", subscription_key="appointment",
                                          resource_type="Appointment", resource_id="example-1", version_id="1")])
    [claimed] = dying.claim(10)  # ... and the instance is killed before it finishes
    assert survivor.claim(10) == []  # leased: nobody else takes it meanwhile
    [again] = survivor.claim(10, now=utcnow() + timedelta(seconds=6))
    assert again.id == claimed.id and again.attempts == 2


def test_two_instances_cannot_both_take_one_recipients_pace(pg_engine: Engine) -> None:
    key, now = b"recipient-index-1", utcnow()
    results: list[bool] = []
    with transaction(pg_engine) as first:
        assert key in take_paces(first, [key], now + timedelta(seconds=8), now)

        def second() -> None:  # blocks on the first's uncommitted row, then sees it committed
            with transaction(pg_engine) as session:
                results.append(key in take_paces(session, [key], now + timedelta(seconds=8), now))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive()  # waiting for the first instance's claim to commit or roll back
    thread.join(timeout=10)
    assert results == [False]
    later = now + timedelta(seconds=9)
    with transaction(pg_engine) as session:  # once the interval passed, the slot is free again
        assert key in take_paces(session, [key], later + timedelta(seconds=8), later)


class _CloudApi:
    """A port fake: accepts every message (a wamid per request) and keeps what reached it."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def send(self, payload: dict[str, Any]) -> SendResult:
        self.received.append(str(payload["biz_opaque_callback_data"]))
        return SendResult(message_id=f"wamid.{len(self.received)}", wa_id=None)


def _queue(outbox: OutboxStore, key: str, patient: int) -> None:
    with transaction(outbox.engine) as session:
        outbox.enqueue(session, natural_key=key, rule_id="rule", resource_ref=f"Appointment/{key}",
                       patient_ref=f"Patient/example-{patient}", recipient=f"+1201555{100 + patient:04d}",
                       template={"name": "results_ready", "language": {"code": "en_US"}}, due_at=utcnow())


def _rows(engine: Engine) -> dict[str, OutboxMessage]:
    with Session(engine) as session:
        return {row.natural_key: row for row in session.exec(select(OutboxMessage))}


def test_a_message_whose_lease_ran_out_before_sending_is_not_sent(engine: Engine) -> None:
    outbox = OutboxStore(engine, contact_book(), ClaimRules(send_lease=timedelta(milliseconds=1)))
    _queue(outbox, "a1", 1)
    api = _CloudApi()
    dispatcher = Dispatcher(outbox, api, RetryPolicy(3, 1.0, 10.0), batch_size=10, concurrency=2)
    assert asyncio.run(dispatcher.run_once()) == 1
    assert api.received == []  # another instance may already hold it: sending now could send it twice
    row = _rows(engine)["a1"]
    assert row.state == "queued" and row.last_error_class == "LeaseExpired"
    with Session(engine) as session:
        assert session.exec(select(AuditEvent)).all() == []  # nothing left the building: no disclosure


def test_a_late_answer_from_an_expired_claim_does_not_undo_the_new_claim(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    _queue(outbox, "a1", 1)
    [stale] = outbox.claim_due(10)
    [fresh] = outbox.claim_due(10, now=utcnow() + timedelta(minutes=3))  # the first instance died, it seemed
    assert fresh.attempt_no == 2
    outbox.record([SendOutcome(stale.outbox_id, stale.attempt_id, "retry", retry_at=utcnow())])
    assert _rows(engine)["a1"].state == "sending"  # still the second claim's
    outbox.record([SendOutcome(fresh.outbox_id, fresh.attempt_id, "sent", wamid="wamid.2", answered_at=utcnow())])
    row = _rows(engine)["a1"]
    assert row.state == "sent" and row.wamid == "wamid.2"
