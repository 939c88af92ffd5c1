"""Key rotation completes while the service keeps serving.

The real service (HTTP app and pipeline) runs on a keyring file against the WhatsApp emulator over
loopback HTTP. A thread keeps sends and inbound webhooks flowing while a separate ``bridge keys``
process (the realistic shape: an operator's CLI with its own engine) rotates the data key and then the
index key, re-encrypting and re-indexing online. On SQLite (one instance) the same jobs run in the
service's process instead: see :func:`rotate_in_process`. No request may fail, every message must be handled,
and afterwards no row may use an old key. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.app import create_app
from adapter.cli.keys import GRACE_SECONDS
from adapter.conversation.tables import InboundMessage
from adapter.demo.stack import wait_for
from adapter.maintenance.key_usage import key_usage
from adapter.maintenance.reencrypt import reencrypt
from adapter.maintenance.reindex import reindex
from adapter.ops.tables import ServiceFlag
from adapter.outbox.tables import OutboxMessage, RecipientPace
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.security.keys import Keyring, LocalWrappingKey
from adapter.settings import load_settings
from adapter.storage.db import make_engine, transaction, upgrade, utcnow
from tests.support.asgi_server import serve_in_thread
from tests.support.e2e import emulator_for, point_webhooks

PATIENTS = 8
TEMPLATE = {"name": "service_update", "language": {"code": "en_US"}}
CLI = "from adapter.cli.keys import keys_app; keys_app(prog_name='bridge keys')"


def number(i: int) -> str:
    return f"+1555010{i:04d}"


def run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_data_and_index_keys_rotate_while_the_service_keeps_serving(database_url: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    upgrade(make_engine(database_url))
    kek = base64.urlsafe_b64encode(os.urandom(32)).decode()
    keyring = tmp_path / "keyring.json"
    Keyring.create(keyring, LocalWrappingKey(base64.urlsafe_b64decode(kek)))
    settings = load_settings(mode="demo", database_url=database_url, keyring_file=str(keyring),
                             key_wrapping_key=kek, manage_subscriptions=False, tick_seconds=0.05,
                             whatsapp_pair_interval_seconds=1.0, dispatch_backoff_seconds=0.2,
                             dispatch_backoff_max_seconds=0.5, fhir_base_url="http://127.0.0.1:9/fhir")
    emulator, settings = emulator_for(settings)
    app = create_app(settings)
    keys_before = Keyring.load(keyring, LocalWrappingKey(base64.urlsafe_b64decode(kek))).current()
    try:
        with serve_in_thread(app, lifespan="on") as url:
            service = app.state.service
            point_webhooks(emulator, url)
            with transaction(service.engine) as session:
                for i in range(PATIENTS):
                    set_consent(session, f"Patient/example-{i}", OPTED_IN, "admin")
            sends = itertools.count()
            inbound: list[str] = []
            errors: list[str] = []
            stop = threading.Event()

            def send(i: int) -> None:
                with transaction(service.engine) as session:
                    service.outbox.enqueue_message(
                        session, natural_key=f"rotation:{next(sends)}", rule_id="test",
                        resource_ref=f"Appointment/example-{i}", patient_ref=f"Patient/example-{i}",
                        recipient=number(i), message={"type": "template", "template": TEMPLATE}, due_at=utcnow())
                service.pipeline.wake()

            def traffic() -> None:
                for step in itertools.count():
                    if stop.is_set():
                        return
                    i = step % PATIENTS
                    try:
                        send(i)
                        answer = httpx.post(f"{emulator.base_url}/_emulator/inbound", timeout=30,
                                            json={"from": number(i).lstrip("+"), "text": "hello"})
                        answer.raise_for_status()
                        body = answer.json()
                        if not body["delivered"] or [a["http_status"] for a in body["attempts"]] != [200]:
                            errors.append(f"inbound webhook {len(inbound)}: {body['attempts']}")
                        inbound.append(str(body["message_id"]))
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    time.sleep(0.02)

            for i in range(PATIENTS):  # every patient is a known contact before the rotation starts
                send(i)
            wait_for(lambda: sent_count(service.engine) >= PATIENTS, 20, "the first messages")
            worker = threading.Thread(target=traffic, daemon=True)
            worker.start()
            env = {**os.environ, "BRIDGE_MODE": "demo", "BRIDGE_DATABASE_URL": database_url,
                   "BRIDGE_KEYRING_FILE": str(keyring), "BRIDGE_KEY_WRAPPING_KEY": kek}
            env.pop("BRIDGE_SETTINGS_FILE", None)
            try:
                time.sleep(1.0)
                if database_url.startswith("sqlite"):
                    rotate_in_process(service.engine, keyring, kek)
                else:
                    run_cli(env, "rotate", "data", "--batch-size", "5")
                    run_cli(env, "rotate", "index", "--batch-size", "5")
                time.sleep(1.0)  # traffic after the rotation, under the new keys
            finally:
                stop.set()
                worker.join(timeout=60)
            assert not errors, errors[:5]
            assert len(inbound) > 20  # traffic really flowed during the rotation
            total = next(sends)
            try:
                wait_for(lambda: sent_count(service.engine) >= total, 60, "every send handled")
            except TimeoutError:
                raise AssertionError(f"{total} sends, states: {send_states(service.engine)}") from None
            wait_for(lambda: inbound_done(service.engine) >= len(inbound), 60, "every inbound message handled")
            deliveries = httpx.get(f"{emulator.base_url}/_emulator/webhooks", timeout=10).json()["deliveries"]
            refused = [a for d in deliveries for a in d["attempts"] if a["http_status"] != 200]
            assert len(deliveries) > len(inbound) and not refused, refused[:5]  # statuses too: none refused
            keys_after = service.cipher.keys.current()
            usage = key_usage(service.engine)
            assert keys_after.active_data != keys_before.active_data
            assert keys_after.active_index != keys_before.active_index
            assert keys_before.active_data not in usage and keys_before.active_index not in usage, usage
            assert usage[keys_after.active_data] > 0 and usage[keys_after.active_index] > 0
            failures = [f"{r.name}: {r.getMessage()}"[:300] for r in caplog.records if r.levelno >= logging.ERROR]
            assert not failures, failures[:5]  # the pipeline did not fail a step (e.g. a deadlock) either
            status = run_cli(env, "status")
            assert keys_after.active_data in status and kek not in status
            run_cli(env, "retire", keys_before.active_data)
            run_cli(env, "retire", keys_before.active_index)
    finally:
        emulator.stop()


def sent_count(engine: object) -> int:
    with Session(engine) as session:  # type: ignore[arg-type]
        rows = session.exec(select(OutboxMessage.state).where(col(OutboxMessage.natural_key).like("rotation:%")))
        return sum(1 for state in rows if state == "sent")


def send_states(engine: object) -> dict[str, int]:
    with Session(engine) as session:  # type: ignore[arg-type]
        rows = session.exec(select(OutboxMessage).where(col(OutboxMessage.natural_key).like("rotation:%"))).all()
    found: dict[str, int] = {}
    with Session(engine) as session:  # type: ignore[arg-type]
        for pace in session.exec(select(RecipientPace)).all():
            found[f"pace/{pace.recipient_key[:4].hex()}/{int((pace.next_send_at - utcnow()).total_seconds())}"] = 1
        for flag in session.exec(select(ServiceFlag)).all():
            found[f"flag/{flag.name}/{flag.reason}"] = 1
    for row in rows:
        wait = int((row.due_at - utcnow()).total_seconds())
        tag = row.recipient_key[:4].hex() if row.recipient_key else None
        name = f"{row.state}/{row.last_error_class}/{row.attempts}/{wait}/{tag}"
        found[name] = found.get(name, 0) + 1
    return found


def inbound_done(engine: object) -> int:
    with Session(engine) as session:  # type: ignore[arg-type]
        return len(session.exec(select(InboundMessage.id).where(col(InboundMessage.state) == "done")).all())



def rotate_in_process(engine: Engine, keyring: Path, kek: str) -> None:
    """SQLite: one instance, whose writers take turns in-process (adapter.storage.db). A second writer process
    would make the service's read-then-write steps fail with "database is locked", so on SQLite the
    rotation runs beside the service in its process, on its engine, exactly as the CLI would run it."""
    ring = Keyring.load(keyring, LocalWrappingKey(base64.urlsafe_b64decode(kek)))
    for kind, job in (("data", reencrypt), ("index", reindex)):
        ring.rotate(kind)  # type: ignore[arg-type]
        time.sleep(GRACE_SECONDS)
        job(engine, ring, batch_size=5, agent="cli:test")
