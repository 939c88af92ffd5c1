"""Several instances on one database: the leader lock (PostgreSQL), SQLite's one-instance guard, leases
that free a dead instance's work, heartbeats that free it sooner (a dead instance's claims, a restart's
own earlier claims, in-doubt messages a status proves sent), and the pair-interval check under
concurrent claims."""

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
from adapter.feeds.tables import InboxEvent
from adapter.ops.instances import Leadership, hold_instance, sqlite_lock_path
from adapter.ops.liveness import LeasedTable, Liveness, LivenessConfig
from adapter.outbox.batch_writes import take_paces
from adapter.outbox.claims import ClaimRules
from adapter.outbox.dispatch import Dispatcher, RetryPolicy
from adapter.outbox.encoding import callback_data
from adapter.outbox.results import SendOutcome
from adapter.outbox.statuses import apply_pending
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage, WhatsAppStatus
from adapter.settings import Settings, SettingsError, load_settings
from adapter.storage.db import make_engine, table_of, transaction, utcnow
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


# --------------------------------------------------------------------------- heartbeats and takeover

_TABLES = (LeasedTable("messages", table_of(OutboxMessage), in_doubt=True), LeasedTable("events", table_of(InboxEvent)))
_CONFIG = LivenessConfig(heartbeat=timedelta(seconds=1), dead_after=timedelta(seconds=10),
                         in_doubt_grace=timedelta(seconds=5))


def _instance(engine: Engine, name: str, pair_interval: float = 0) -> tuple[Liveness, OutboxStore, InboxStore]:
    """One instance's parts as the service wires them: its liveness, and stores that lease under its boot."""
    liveness = Liveness(engine, name, _TABLES, _CONFIG)
    outbox = OutboxStore(engine, contact_book(), ClaimRules(pair_interval=timedelta(seconds=pair_interval),
                                                            owner=liveness.owner,
                                                            in_doubt_grace=_CONFIG.in_doubt_grace))
    inbox = InboxStore(engine)
    inbox.owner = liveness.owner
    return liveness, outbox, inbox


def _event(inbox: InboxStore, number: int) -> None:
    inbox.accept([IncomingNotification(kind="resource", subscription_key="appointment", resource_type="Appointment",
                                       resource_id=f"example-{number}", version_id="1")])


def test_a_dead_instances_claims_are_released_once_its_heartbeat_is_old(pg_engine: Engine) -> None:
    dying, dying_outbox, dying_inbox = _instance(pg_engine, "ward-a")
    survivor, survivor_outbox, survivor_inbox = _instance(pg_engine, "ward-b")
    dying.start()
    survivor.start()
    _queue(dying_outbox, "a1", 1)
    _event(dying_inbox, 1)
    [message] = dying_outbox.claim_due(10)
    [event] = dying_inbox.claim(10)  # ... and the instance is killed (no heartbeat from now on)
    now = utcnow()
    assert not survivor.release(now)  # its heartbeat is fresh: a live instance keeps its claims
    later = now + _CONFIG.dead_after + timedelta(seconds=1)
    assert survivor.release(later).counts == {"messages": 1, "events": 1}  # one UPDATE per table
    assert not survivor.release(later)  # released once
    assert [again.id for again in survivor_inbox.claim(10, now=later)] == [event.id]  # free at once
    # The message may have left before the kill: it waits the in-doubt grace for a status naming it.
    assert survivor_outbox.claim_due(10, now=later) == []
    [taken] = survivor_outbox.claim_due(10, now=later + _CONFIG.in_doubt_grace + timedelta(seconds=1))
    assert (taken.outbox_id, taken.attempt_no) == (message.outbox_id, 2)
    assert _rows(pg_engine)["a1"].lease_owner == survivor.owner


def test_a_restart_takes_its_earlier_boots_claims_back_at_once(engine: Engine) -> None:
    # Pacing on: the killed claim's provisional pace (as long as the lease) must not hold the message back.
    before, outbox, inbox = _instance(engine, "ward-a", pair_interval=6)
    before.start()
    _queue(outbox, "a1", 1)
    _event(inbox, 1)
    outbox.claim_due(10)
    inbox.claim(10)  # SIGKILL here; the same instance starts again a few seconds later
    after, outbox_after, inbox_after = _instance(engine, "ward-a", pair_interval=6)
    assert after.boot_id != before.boot_id
    assert after.start().counts == {"messages": 1, "events": 1}  # its own name's earlier boot: no waiting
    assert len(inbox_after.claim(10)) == 1
    assert len(outbox_after.claim_due(10, now=utcnow() + _CONFIG.in_doubt_grace + timedelta(seconds=1))) == 1


def _status_naming(engine: Engine, outbox_id: int, wamid: str) -> None:
    """The ``sent`` status Meta posts for an accepted message, stored by the webhook (not yet applied)."""
    with transaction(engine) as session:
        session.add(WhatsAppStatus(dedupe_key=f"{wamid}:sent", wamid=wamid, status="sent", meta_timestamp=1,
                                   callback_data=callback_data(outbox_id), received_at=utcnow()))


def test_a_message_taken_over_in_doubt_is_not_sent_again_when_a_status_names_it(engine: Engine) -> None:
    dying, dying_outbox, _ = _instance(engine, "ward-a")
    survivor, survivor_outbox, _ = _instance(engine, "ward-a")
    dying.start()
    for number in (1, 2):
        _queue(dying_outbox, f"a{number}", number)
    sent, unsent = sorted(dying_outbox.claim_due(10), key=lambda message: message.outbox_id)
    _status_naming(engine, sent.outbox_id, "wamid.sent-before-the-kill")  # only the first reached Meta
    survivor.start()
    due = utcnow() + _CONFIG.in_doubt_grace + timedelta(seconds=1)
    [again] = survivor_outbox.claim_due(10, now=due)
    assert again.outbox_id == unsent.outbox_id  # no status names it: sent again
    assert survivor_outbox.claim_due(10, now=due + _CONFIG.in_doubt_grace * 2) == []  # never the first
    apply_pending(engine)  # applying the status settles it as sent, with the wamid Meta gave
    row = _rows(engine)["a1"]
    assert (row.state, row.wamid) == ("sent", "wamid.sent-before-the-kill")


def test_an_instance_whose_heartbeat_is_late_sends_nothing(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    _queue(outbox, "a1", 1)
    api = _CloudApi()
    dispatcher = Dispatcher(outbox, api, RetryPolicy(3, 1.0, 10.0), batch_size=10, concurrency=2,
                            alive_until=lambda: utcnow() - timedelta(seconds=1))
    assert asyncio.run(dispatcher.run_once()) == 1
    assert api.received == []  # the others may take it for dead: its messages may be taken over
    assert _rows(engine)["a1"].last_error_class == "LeaseExpired"


def test_liveness_settings_are_checked_together() -> None:
    with pytest.raises(ValueError, match="three times heartbeat_seconds"):
        Settings(mode="demo", heartbeat_seconds=5, instance_dead_after_seconds=10)
    with pytest.raises(ValueError, match="a send must end before another instance may take its message over"):
        Settings(mode="demo", whatsapp_timeout_seconds=20)
    settings = Settings(mode="demo", whatsapp_timeout_seconds=20, instance_dead_after_seconds=30)
    assert (settings.heartbeat_seconds, settings.in_doubt_grace_seconds) == (2.0, 5.0)
