"""Portal link lifecycle on SQLite and PostgreSQL: key rotation, single use under concurrency,
the access log (every request, never the token), revocation at every level, the probe guard."""

from __future__ import annotations

import base64
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.link_access import LINK_PORTS
from adapter.storage.db import transaction, utcnow
from portal_links.guard import ProbeGuard, recent_rate_limited
from portal_links.requests import classify_user_agent, insert_request
from portal_links.revocation import revoke_created_between, revoke_link, revoke_message, revoke_patient
from portal_links.store import LinkOutcome, LinkStore
from portal_links.tables import LinkRequest, LinkToken
from portal_links.tokens import LinkSigner, TokenProblem, TokenRefused, key_id_for, token_hash

KEY, OLD_KEY, OLDER_KEY = b"L" * 32, b"O" * 32, b"Q" * 32
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
COLLIDING_KEY = b"P" * 32  # its key id equals KEY's


def mint(engine: Engine, store: LinkStore, **kw: Any) -> str:
    values: dict[str, Any] = {"purpose": "diagnostic-report-ready", "target": "report", "patient_ref": "Patient/1",
                              "resource_ref": "DiagnosticReport/1", **kw}
    with transaction(engine) as session:
        return store.mint(session, **values)


def requests_of(engine: Engine) -> list[LinkRequest]:
    with Session(engine) as session:
        return list(session.exec(select(LinkRequest).order_by(col(LinkRequest.id))).all())


def total_opens(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.coalesce(func.sum(col(LinkToken.opens)), 0))).one())


@contextmanager
def statements_touching_link_token(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "link_token" in statement.lower():
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_rotated_signer_mints_with_the_new_key_and_verifies_old_tokens() -> None:
    expiry = datetime.now(UTC) + timedelta(hours=1)
    old_token = LinkSigner(OLD_KEY).mint(expiry)
    rotated = LinkSigner(KEY, previous=[OLD_KEY, OLDER_KEY])
    new_token = rotated.mint(expiry)
    assert base64.urlsafe_b64decode(new_token + "==")[0] == key_id_for(KEY) == rotated.current_key_id
    assert rotated.verify(old_token).key_id == key_id_for(OLD_KEY)
    assert rotated.verify(new_token).key_id == key_id_for(KEY)
    with pytest.raises(TokenRefused) as refused:
        LinkSigner(OLD_KEY).verify(new_token)  # the old deployment does not know the new key
    assert refused.value.problem is TokenProblem.MALFORMED
    with pytest.raises(TokenRefused):
        LinkSigner(KEY).verify(old_token)  # the old key dropped: its tokens read as forgeries
    with pytest.raises(ValueError, match="collides"):
        LinkSigner(KEY, previous=[COLLIDING_KEY])
    # The older spelling still works.
    assert LinkSigner(KEY, {key_id_for(OLD_KEY): OLD_KEY}).verify(old_token).key_id == key_id_for(OLD_KEY)


def test_mint_keeps_the_message_key_and_the_link_state(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    mint(engine, store, max_opens=1, message_key="outbox:DiagnosticReport/1:3:ready")
    with Session(engine) as session:
        row = session.exec(select(LinkToken)).one()
    assert (row.message_key, row.purpose, row.target, row.patient_ref, row.resource_ref, row.opens, row.max_opens) == (
        "outbox:DiagnosticReport/1:3:ready", "diagnostic-report-ready", "report", "Patient/1", "DiagnosticReport/1",
        0, 1)


def test_single_use_link_opens_exactly_once_under_concurrent_redeems(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store, max_opens=1)
    barrier, outcomes = threading.Barrier(10), []
    lock = threading.Lock()

    def tap() -> None:
        barrier.wait()
        outcome = store.redeem(engine, token, client="198.51.100.7").outcome
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=tap) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(outcomes) == {LinkOutcome.OPENED: 1, LinkOutcome.EXHAUSTED: 9}
    assert total_opens(engine) == 1
    assert Counter(r.outcome for r in requests_of(engine)) == {"opened": 1, "exhausted": 9}


def test_every_request_is_recorded_with_its_link_and_never_the_token(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store, max_opens=1)
    assert store.preview(engine, token, client="198.51.100.7", user_agent="WhatsApp/2.23.20.0 A",
                         method="HEAD") is LinkOutcome.PREVIEW
    assert store.preview(engine, token, client="198.51.100.7",
                         user_agent="facebookexternalhit/1.1") is LinkOutcome.PREVIEW
    assert store.redeem(engine, token, client="198.51.100.7", user_agent="Mozilla/5.0 (iPhone)").outcome \
        is LinkOutcome.OPENED
    assert store.redeem(engine, token, client="198.51.100.7").outcome is LinkOutcome.EXHAUSTED
    unknown = LinkSigner(KEY).mint(datetime.now(UTC) + timedelta(hours=1))
    assert store.redeem(engine, unknown, client="203.0.113.9").outcome is LinkOutcome.UNKNOWN
    assert store.redeem(engine, "not-a-token", client="203.0.113.9").outcome is LinkOutcome.MALFORMED
    with Session(engine) as session:
        link_id = session.exec(select(col(LinkToken.id))).one()
    rows = requests_of(engine)
    assert [(r.link_id, r.outcome, r.method, r.ua_class) for r in rows] == [
        (link_id, "preview", "HEAD", "whatsapp"), (link_id, "preview", "GET", "facebook"),
        (link_id, "opened", "POST", "browser"), (link_id, "exhausted", "POST", "other"),
        (None, "unknown", "POST", "other"), (None, "malformed", "POST", "other")]
    assert rows[0].client == "198.51.100.7" and rows[-1].client == "203.0.113.9"
    assert all(r.at is not None and r.at.tzinfo is not None for r in rows)
    with engine.connect() as connection:
        dump = repr(connection.execute(text("SELECT * FROM link_request")).all())
    for secret in (token, unknown):
        assert secret not in dump and token_hash(secret).hex() not in dump and repr(token_hash(secret)) not in dump


def test_previews_never_count_an_open_whoever_asks(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store, max_opens=1)
    for agent in ("WhatsApp/2.23.20.0 A", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0.0.0 Safari/537.36",
                  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"):
        for method in ("GET", "HEAD"):
            assert store.preview(engine, token, user_agent=agent, method=method) is LinkOutcome.PREVIEW
    assert total_opens(engine) == 0
    assert store.redeem(engine, token).outcome is LinkOutcome.OPENED


def test_altered_token_is_refused_and_recorded_without_a_link_token_lookup(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store)
    # Every position, and at each the neighbouring alphabet letter: at the last position that
    # flips only base64 slack bits, a second spelling of the same bytes, which must not pass either.
    alterations = [token[:i] + ALPHABET[ALPHABET.index(c) ^ 1] + token[i + 1:] for i, c in enumerate(token)]
    alterations += [token.replace("-", "+").replace("_", "/") + "x" * ("-" not in token and "_" not in token),
                    token + "=", token + "==", " " + token]
    with statements_touching_link_token(engine) as seen:
        for altered in alterations:
            assert altered != token
            assert store.redeem(engine, altered, client="203.0.113.9").outcome is LinkOutcome.MALFORMED
            assert store.preview(engine, altered, client="203.0.113.9") is LinkOutcome.MALFORMED
    assert seen == []
    with statements_touching_link_token(engine) as seen:  # the counter does see real lookups
        store.redeem(engine, token)
    assert seen
    rows = requests_of(engine)[:-1]
    assert len(rows) == 2 * len(alterations) and {(r.outcome, r.link_id) for r in rows} == {("malformed", None)}


def test_expired_link_is_recorded_expired_without_a_lookup(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=1), LINK_PORTS)
    token = mint(engine, store, now=utcnow() - timedelta(hours=1, seconds=1))
    with statements_touching_link_token(engine) as seen:  # the signed expiry alone refuses it
        assert store.redeem(engine, token).outcome is LinkOutcome.EXPIRED
        assert store.preview(engine, token) is LinkOutcome.EXPIRED
    assert seen == []
    rows = requests_of(engine)
    assert [(r.outcome, r.link_id) for r in rows] == [("expired", None), ("expired", None)]


def test_revocation_at_every_level_is_one_update_effective_at_once(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    start = utcnow()
    single = mint(engine, store, patient_ref="Patient/9")
    msg_a = mint(engine, store, patient_ref="Patient/9", message_key="m1")
    msg_b = mint(engine, store, patient_ref="Patient/9", message_key="m1")
    patient_a = mint(engine, store, patient_ref="Patient/2", message_key="m2")
    patient_b = mint(engine, store, patient_ref="Patient/2", message_key="m3")
    window = mint(engine, store, patient_ref="Patient/3", now=start - timedelta(hours=2))
    outside = mint(engine, store, patient_ref="Patient/3", now=start - timedelta(hours=5))
    for token in (single, msg_a, patient_a, window, outside):  # live, and opened once already
        assert store.redeem(engine, token).outcome is LinkOutcome.OPENED
    with Session(engine) as session:
        single_id = session.exec(select(col(LinkToken.id)).where(col(LinkToken.token_hash) == token_hash(single))).one()

    assert revoke_link(engine, single_id, ports=LINK_PORTS) == 1
    assert store.redeem(engine, single).outcome is LinkOutcome.REVOKED
    assert store.redeem(engine, msg_a).outcome is LinkOutcome.OPENED
    assert revoke_message(engine, "m1", ports=LINK_PORTS) == 2
    assert {store.redeem(engine, t).outcome for t in (msg_a, msg_b)} == {LinkOutcome.REVOKED}
    assert revoke_patient(engine, "Patient/2", ports=LINK_PORTS) == 2
    assert {store.redeem(engine, t).outcome for t in (patient_a, patient_b)} == {LinkOutcome.REVOKED}
    assert revoke_created_between(engine, start - timedelta(hours=3), start - timedelta(hours=1), ports=LINK_PORTS) == 1
    assert store.redeem(engine, window).outcome is LinkOutcome.REVOKED
    assert store.redeem(engine, outside).outcome is LinkOutcome.OPENED
    # Already revoked links are not counted again; their first revocation time stays.
    assert revoke_patient(engine, "Patient/9", ports=LINK_PORTS) == 0
    assert revoke_link(engine, single_id, ports=LINK_PORTS) == 0
    assert revoke_link(engine, 10_000_000, ports=LINK_PORTS) == 0
    with pytest.raises(ValueError):
        revoke_created_between(engine, start, start, ports=LINK_PORTS)


def test_ten_thousand_random_tokens_find_nothing_and_trip_the_guard(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    for i in range(20):
        mint(engine, store, patient_ref=f"Patient/{i}")
    guard, client, outcomes = ProbeGuard(limit=20, window_seconds=60), "203.0.113.66", Counter[str]()
    guesses = [base64.urlsafe_b64encode(os.urandom(37)).rstrip(b"=").decode() for _ in range(10_000)]
    assert {len(g) for g in guesses} == {50}
    signer = LinkSigner(KEY)
    for guess in guesses:  # the signature alone refuses every guess
        with pytest.raises(TokenRefused):
            signer.verify(guess)
    with statements_touching_link_token(engine) as seen:
        for guess in guesses:
            if guard.blocked(client):
                outcomes["rate_limited"] += 1
                continue
            outcome = store.redeem(engine, guess, client=client).outcome.value
            guard.note(client, outcome)
            outcomes[outcome] += 1
    assert seen == []  # no guess even reached the link table
    assert outcomes == {"malformed": 20, "rate_limited": 9_980}
    assert total_opens(engine) == 0
    assert guard.blocked(client) and not guard.blocked("198.51.100.1")


def test_operators_see_recent_rate_limited_addresses(engine: Engine) -> None:
    now = utcnow()
    with transaction(engine) as session:
        for client, count in (("203.0.113.5", 3), ("203.0.113.6", 1)):
            for _ in range(count):
                insert_request(session, LINK_PORTS.audit, link_id=None, outcome="rate_limited", client=client,
                               user_agent="curl/8", method="POST", at=now)
        insert_request(session, LINK_PORTS.audit, link_id=None, outcome="rate_limited", client="203.0.113.7",
                       user_agent=None, method="GET", at=now - timedelta(hours=3))
        insert_request(session, LINK_PORTS.audit, link_id=None, outcome="malformed", client="203.0.113.8",
                       user_agent=None, method="GET", at=now)
    seen = recent_rate_limited(engine)
    assert [(c.client, c.requests) for c in seen] == [("203.0.113.5", 3), ("203.0.113.6", 1)]
    assert [c.client for c in recent_rate_limited(engine, since=now - timedelta(hours=4))][-1] == "203.0.113.7"


def test_guard_window_slides_and_only_failures_count() -> None:
    clock = [0.0]
    guard = ProbeGuard(limit=3, window_seconds=60, clock=lambda: clock[0])
    for outcome in ("opened", "revoked", "exhausted", "preview"):
        guard.note("a", outcome)
    assert not guard.blocked("a")
    for outcome in ("unknown", "malformed", "expired"):
        guard.note("a", outcome)
        clock[0] += 10
    assert guard.blocked("a") and not guard.blocked("b") and not guard.blocked(None)
    clock[0] = 60.5  # the first failure (t=0) has left the window
    assert not guard.blocked("a")


@pytest.mark.parametrize(("agent", "label"), [
    ("WhatsApp/2.23.20.0 A", "whatsapp"), ("facebookexternalhit/1.1", "facebook"),
    ("Mozilla/5.0 HeadlessChrome/120.0", "headless"), ("Mozilla/5.0 (iPhone; like Mac OS X) Safari", "browser"),
    ("Googlebot/2.1", "bot"), ("curl/8.5.0", "bot"), ("", "other"), (None, "other"), ("Lynx/2.8", "other")])
def test_user_agent_classes_are_labels(agent: str | None, label: str) -> None:
    assert classify_user_agent(agent) == label
