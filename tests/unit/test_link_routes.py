"""The portal link endpoints over real loopback HTTP: GET/HEAD never count, POST redeems once and
answers 303, dead and probing requests get the same neutral page, every request is recorded,
revocation bites at once, and no token reaches a log."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.link_access import LINK_PORTS
from adapter.storage.db import make_engine, transaction, upgrade, utcnow
from portal_links.guard import ProbeGuard, recent_rate_limited
from portal_links.redact import TokenRedactingFilter, install_log_redaction, redact_link_tokens
from portal_links.revocation import revoke_created_between, revoke_link, revoke_message, revoke_patient
from portal_links.routes import build_link_router
from portal_links.store import LinkOutcome, LinkStore
from portal_links.tables import LinkRequest, LinkToken
from portal_links.tokens import LinkSigner, token_hash
from tests.support.asgi_server import serve_in_thread

KEY = b"R" * 32
PORTAL = "https://portal.hospital.example"
PUBLIC_BASE = "https://links.hospital.example"
AGENTS = {
    "whatsapp": "WhatsApp/2.23.20.0 A",
    "facebook": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "headless": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0",
}


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'bridge.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


class Site:
    def __init__(self, engine: Engine, guard: ProbeGuard | None = None) -> None:
        self.engine = engine
        self.store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
        self.outcomes: list[LinkOutcome] = []
        self.app = FastAPI()
        self.app.include_router(build_link_router(self.store, engine, PORTAL, self.outcomes.append,
                                                  guard=guard or ProbeGuard()))

    def mint(self, **kw: Any) -> str:
        values: dict[str, Any] = {"purpose": "appointment-booked", "target": "appointment",
                                  "patient_ref": "Patient/1", "resource_ref": "Appointment/1", **kw}
        with transaction(self.engine) as session:
            return self.store.mint(session, **values)

    def opens(self) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.coalesce(func.sum(col(LinkToken.opens)), 0))).one())

    def requests(self) -> list[LinkRequest]:
        with Session(self.engine) as session:
            return list(session.exec(select(LinkRequest).order_by(col(LinkRequest.id))).all())


def assert_neutral(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in response.headers["x-robots-tag"]
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    if response.request.method != "HEAD" and response.status_code != 303:
        body = response.text
        assert "Patient/" not in body and "Appointment/" not in body and "http" not in body.replace(
            "http-equiv", "")  # no third-party assets, no links out


def test_parallel_posts_of_a_single_use_link_give_exactly_one_redirect(engine: Engine) -> None:
    site = Site(engine)
    token = site.mint(max_opens=1)
    with serve_in_thread(site.app) as base:
        def tap(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=30) as client:
                return client.post(f"/l/{token}")

        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(tap, range(10)))
    assert Counter(r.status_code for r in responses) == {303: 1, 410: 9}
    redirect = next(r for r in responses if r.status_code == 303)
    assert redirect.headers["location"] == PORTAL + "/appointments"
    for response in responses:
        assert_neutral(response)
    assert site.opens() == 1
    assert Counter(r.outcome for r in site.requests()) == {"opened": 1, "exhausted": 9}
    assert {r.client for r in site.requests()} == {"127.0.0.1"}


def test_link_one_second_past_expiry_is_refused(sqlite_engine: Engine) -> None:
    site = Site(sqlite_engine)
    ttl = site.store.ttl
    live = site.mint(now=utcnow() - ttl + timedelta(seconds=30))
    dead = site.mint(now=utcnow() - ttl - timedelta(seconds=1))
    with serve_in_thread(site.app) as base, httpx.Client(base_url=base) as client:
        expired = client.post(f"/l/{dead}")
        assert expired.status_code == 410 and "fresh link" in expired.text
        assert client.post(f"/l/{live}").status_code == 303
    assert [r.outcome for r in site.requests()] == ["expired", "opened"]


def test_revocation_at_every_level_bites_at_once(sqlite_engine: Engine) -> None:
    site = Site(sqlite_engine)
    start = utcnow()
    single = site.mint(patient_ref="Patient/7")
    message = site.mint(patient_ref="Patient/7", message_key="msg-1")
    patient = site.mint(patient_ref="Patient/8")
    windowed = site.mint(patient_ref="Patient/9", now=start - timedelta(hours=2))
    with Session(sqlite_engine) as session:
        single_id = session.exec(select(col(LinkToken.id)).where(col(LinkToken.token_hash) == token_hash(single))).one()
    revocations = [(single, lambda: revoke_link(sqlite_engine, single_id, ports=LINK_PORTS)),
                   (message, lambda: revoke_message(sqlite_engine, "msg-1", ports=LINK_PORTS)),
                   (patient, lambda: revoke_patient(sqlite_engine, "Patient/8", ports=LINK_PORTS)),
                   (windowed, lambda: revoke_created_between(sqlite_engine, start - timedelta(hours=3),
                                                             start - timedelta(hours=1), ports=LINK_PORTS))]
    with serve_in_thread(site.app) as base, httpx.Client(base_url=base) as client:
        for token, revoke in revocations:
            assert client.post(f"/l/{token}").status_code == 303
            assert revoke() == 1
            refused = client.post(f"/l/{token}")
            assert refused.status_code == 410 and "fresh link" in refused.text
            assert_neutral(refused)
    assert [r.outcome for r in site.requests()] == ["opened", "revoked"] * 4


def test_previews_by_whatsapp_facebook_and_headless_browsers_never_count(sqlite_engine: Engine) -> None:
    site = Site(sqlite_engine)
    token = site.mint(max_opens=1)
    with serve_in_thread(site.app) as base, httpx.Client(base_url=base) as client:
        for agent in AGENTS.values():
            for method in ("GET", "HEAD"):
                response = client.request(method, f"/l/{token}", headers={"User-Agent": agent})
                assert response.status_code == 200
                assert_neutral(response)
        assert site.opens() == 0
        opened = client.post(f"/l/{token}", headers={"User-Agent": "Mozilla/5.0 (iPhone)"})
        assert opened.status_code == 303
    assert [(r.outcome, r.method, r.ua_class) for r in site.requests()] == [
        ("preview", method, label) for label in AGENTS for method in ("GET", "HEAD")] + [("opened", "POST", "browser")]
    assert site.opens() == 1


def test_pages_are_neutral_with_strict_headers_and_the_url_is_short(sqlite_engine: Engine) -> None:
    site = Site(sqlite_engine)
    token = site.mint()
    url = f"{PUBLIC_BASE}/l/{token}"
    assert len(url) < 200  # far under the 2,000 characters some clients cut at
    with serve_in_thread(site.app) as base, httpx.Client(base_url=base) as client:
        live, dead = client.get(f"/l/{token}"), client.post("/l/" + "A" * 50)
        assert live.status_code == 200 and "<form method=\"post\">" in live.text
        assert dead.status_code == 410 and "fresh link" in dead.text
        for response in (live, dead, client.head(f"/l/{token}")):
            assert_neutral(response)
            assert "<script" not in response.text and "src=" not in response.text
        assert live.text.replace(token, "") == client.get("/l/" + "A" * 50).text  # nothing state-dependent


def test_ten_thousand_random_tokens_over_http_find_nothing_and_trip_the_rate_limit(sqlite_engine: Engine) -> None:
    # The window is held still: on a loaded machine 10,000 requests can take longer than a real
    # 60-second window, whose first failures would then leave it and let 20 more through.
    site = Site(sqlite_engine, ProbeGuard(limit=20, window_seconds=60, clock=lambda: 1_000.0))
    for i in range(5):
        site.mint(patient_ref=f"Patient/{i}")
    guesses = [base64.urlsafe_b64encode(os.urandom(37)).rstrip(b"=").decode() for _ in range(10_000)]
    statuses: Counter[int] = Counter()
    with serve_in_thread(site.app) as base, httpx.Client(base_url=base) as client:
        for guess in guesses:
            response = client.post(f"/l/{guess}", headers={"User-Agent": "python-scanner/1.0"})
            statuses[response.status_code] += 1
        limited = client.get(f"/l/{guesses[0]}")
        assert limited.status_code == 429 and "fresh link" in limited.text
        assert_neutral(limited)
    assert statuses == {410: 20, 429: 9_980}
    assert site.opens() == 0
    outcomes = Counter(r.outcome for r in site.requests())
    assert outcomes == {"malformed": 20, "rate_limited": 9_981}
    assert Counter(site.outcomes) == {LinkOutcome.MALFORMED: 20, LinkOutcome.RATE_LIMITED: 9_980}
    seen = recent_rate_limited(sqlite_engine)
    assert [(c.client, c.requests) for c in seen] == [("127.0.0.1", 9_981)]


def serve_with_logging(app: Any) -> AbstractContextManager[str]:
    """``serve_in_thread`` with uvicorn's access log on and propagating to the root logger."""
    return serve_in_thread(app, log_config=None, log_level="debug", access_log=True)


def test_no_token_reaches_any_log(sqlite_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    site = Site(sqlite_engine)
    tokens = [site.mint(max_opens=1) for _ in range(20)]
    caplog.set_level(logging.DEBUG)
    installed = install_log_redaction()
    assert install_log_redaction() is installed  # idempotent
    try:
        for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error"):
            assert sum(isinstance(f, TokenRedactingFilter) for f in logging.getLogger(name).filters) == 1
        with serve_with_logging(site.app) as base, httpx.Client(base_url=base) as client:
            for token in tokens:
                client.get(f"/l/{token}")
                client.head(f"/l/{token}")
                client.post(f"/l/{token}")
                client.post(f"/l/{token}x")
            logging.getLogger("portal_links.test").debug("tapped %s then %s", f"/l/{tokens[0]}", tokens[1][:0])
            logging.getLogger("uvicorn.error").warning(f"failed on {base}/l/{tokens[2]}?a=1")
        time.sleep(0.1)
    finally:
        for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).removeFilter(installed)
            for handler in logging.getLogger(name).handlers:
                handler.removeFilter(installed)
    texts = [record.getMessage() for record in caplog.records] + [caplog.text]
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) >= 80  # the access log did run, with the paths in it
    assert any("/l/[token]" in record.getMessage() for record in access)
    for token in tokens:
        assert not any(token in text for text in texts)
    assert redact_link_tokens("GET /l/abc-_DEF?x=1 and /l/[token]") == "GET /l/[token]?x=1 and /l/[token]"
