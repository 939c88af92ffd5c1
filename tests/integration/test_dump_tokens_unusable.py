"""No usable token at rest (DESIGN.md, invariants: no dump or backup holds a token that still works).

The real pipeline sends a booking confirmation with buttons (its reminders wait queued, with theirs)
and a results-ready message with a portal link, through the emulator. The database is then dumped
(SQLite ``iterdump``, PostgreSQL ``pg_dump``) and every string in it that could be a token — any run
of URL-safe base64 of 16 characters or more, any ``a.b.c`` string, any URL's parts — is tried against
the running service: tapped as a button in a signed webhook from the patient's number, and POSTed to
the portal link endpoint. None may work. The real tokens, taken from the emulator's record of what
was sent, do work afterwards (so the test can fail).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from adapter.conversation.tables import InboundMessage
from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.outbox.tables import ActionToken
from adapter.storage.db import make_engine
from tests.support.e2e import create, ehr_client, health, patient, sent_to
from tests.support.synthetic import synthetic_appointment, synthetic_diagnostic_report

pytestmark = pytest.mark.fhir

BOOKED, RESULTS = 41, 42  # synthetic mobiles +1 201-555-0141 / -0142
_RUN = re.compile(r"[A-Za-z0-9_-]{16,}")
_DOTTED = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+){2,}")
_URL = re.compile(r"https?://[^\s'\"<>\\]+")


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[DemoStack]:
    # No probe limit: every candidate must reach the token check, not a 429.
    stack = start_stack(tmp_path, database_url=database_url, dispatch_backoff_seconds=0.2,
                        link_unknown_per_minute=10_000)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def dump(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return "\n".join(connection.iterdump())
        finally:
            connection.close()
    pg_dump = shutil.which("pg_dump") or "/usr/bin/pg_dump"
    libpq_url = database_url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgresql+psycopg2://", "postgresql://")
    done = subprocess.run([pg_dump, "--no-owner", "--no-privileges", "--dbname", libpq_url], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-500:]
    return done.stdout


def candidates(text: str) -> set[str]:
    """Every string of the dump that could be a token, whole and in its parts."""
    found = set(_RUN.findall(text)) | set(_DOTTED.findall(text))
    for url in _URL.findall(text):
        parts = urlsplit(url)
        found.update(unquote(piece) for piece in re.split(r"[/?&=#]", parts.path + "?" + parts.query + "#"
                                                            + parts.fragment) if len(piece) >= 8)
    return found


def _used_tokens(stack: DemoStack) -> int:
    with Session(make_engine(stack.settings.database_url)) as session:
        return session.exec(select(func.count()).select_from(ActionToken)
                            .where(col(ActionToken.used_at).is_not(None))).one()


def _unprocessed(stack: DemoStack) -> int:
    with Session(make_engine(stack.settings.database_url)) as session:
        return session.exec(select(func.count()).select_from(InboundMessage)
                            .where(col(InboundMessage.processed_at).is_(None))).one()


def _tap(stack: DemoStack, number: int, payload: str) -> None:
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", timeout=10, json={
        "from": f"+1 201-555-01{number:02d}", "button": {"payload": payload, "text": "Confirm"}}).raise_for_status()


def _buttons(message: dict[str, object]) -> list[str]:
    components = message["template"]["components"]  # type: ignore[index]
    return [c["parameters"][0]["payload"] for c in components if c.get("sub_type") == "quick_reply"]


def test_no_string_of_a_dump_works_as_a_button_or_link_token(stack: DemoStack, database_url: str) -> None:
    booked = patient(stack, BOOKED)
    create(stack, synthetic_appointment(booked))
    create(stack, synthetic_appointment(booked))  # its buttons stay untapped: live tokens for the search
    first, second = wait_for(lambda: len(sent) == 2 and sent if (sent := sent_to(stack, BOOKED)) else None, 20,
                             "the confirmations")
    with ehr_client(stack) as client:
        client.post("/DiagnosticReport", json=synthetic_diagnostic_report(patient(stack, RESULTS))
                    ).raise_for_status()
    [results] = wait_for(lambda: sent_to(stack, RESULTS), 20, "results ready")
    link = next(c for c in results["template"]["components"] if c.get("sub_type") == "url")["parameters"][0]["text"]
    real = [*_buttons(first), *_buttons(second), link]
    assert len(real) > 2
    portal, link_url = stack.settings.portal_base_url, f"{stack.settings.public_base_url}/l/{link}"

    # The real tokens work (so the search below can fail), and their use is on file when dumped.
    _tap(stack, BOOKED, _buttons(first)[0])
    wait_for(lambda: (_used_tokens(stack) == 1 and _unprocessed(stack) == 0) or None, 30, "the real tap")
    opened = httpx.post(link_url, timeout=10, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"].startswith(portal)

    text = dump(database_url)
    assert "appointment_confirmation" in text and "results_ready" in text  # the rows are in the dump
    assert [token for token in real if token in text] == []
    tried = sorted(c for c in candidates(text) if len(c) <= 512)
    assert len(tried) > 20  # ciphertexts, hashes, ids: the search has material

    with httpx.Client(timeout=10, follow_redirects=False) as http:
        worked = [c for c in tried if (r := http.post(f"{stack.settings.public_base_url}/l/{c}")).status_code
                  == 303 or r.headers.get("location", "").startswith(portal)]
    assert worked == [], f"{len(worked)} dumped string(s) opened a portal link"
    for candidate in tried:
        if len(candidate) <= 256:  # Meta's limit for a button payload
            _tap(stack, BOOKED, candidate)
    wait_for(lambda: _unprocessed(stack) == 0 or None, 60, "the taps processed")
    assert _used_tokens(stack) == 1, "a dumped string worked as a button token"

    # Nothing above was refused for another reason (a rate limit, a broken endpoint): the link still opens.
    again = httpx.post(link_url, timeout=10, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith(portal)
