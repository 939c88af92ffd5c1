"""A validly signed token outside its validity window — expired, or not yet valid (claiming a longer
life than a link minted now can have) — is refused before any lookup: its redeem and its preview only
record the request (one INSERT into ``link_request``), never read ``link_token``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portal_links.ports import LinkPorts
from portal_links.store import LinkOutcome, LinkStore
from portal_links.tokens import LinkSigner


class _InsertOnlySession:
    """An in-memory session that takes the request log's INSERT and fails on any other statement."""

    def __init__(self) -> None:
        self.logged: list[str] = []

    def execute(self, statement: Any, *args: Any) -> None:
        table = getattr(statement, "table", None)
        if statement.is_insert and table is not None and table.name == "link_request":
            self.logged.append(table.name)
            return
        raise AssertionError("a statement other than the request log's INSERT was run")

    def exec(self, statement: Any, *args: Any) -> None:
        raise AssertionError("link_token was looked up")


class _Audit:
    def __init__(self) -> None:
        self.outcomes: list[tuple[int | None, str]] = []

    def link_request(self, session: Any, *, link_id: int | None, outcome: str, **values: Any) -> None:
        self.outcomes.append((link_id, outcome))

    def revocation(self, session: Any, **values: Any) -> None:
        raise AssertionError("no revocation here")


@pytest.mark.parametrize("expires_in", [timedelta(seconds=-1), timedelta(hours=72, minutes=6)],
                         ids=["expired", "not-yet-valid"])
def test_a_signed_token_outside_its_window_is_refused_without_touching_link_token(expires_in: timedelta) -> None:
    session, audit = _InsertOnlySession(), _Audit()

    @contextmanager
    def transaction(engine: Any) -> Iterator[Any]:
        yield session

    store = LinkStore(LinkSigner(b"L" * 32), timedelta(hours=72), LinkPorts(transaction, audit))  # type: ignore[arg-type]
    expired = store.signer.mint(datetime.now(UTC) + expires_in)
    assert store.redeem(None, expired).outcome is LinkOutcome.EXPIRED  # type: ignore[arg-type]
    assert store.preview(None, expired) is LinkOutcome.EXPIRED  # type: ignore[arg-type]
    assert session.logged == ["link_request", "link_request"]
    assert audit.outcomes == [(None, "expired"), (None, "expired")]


def test_the_fake_fails_when_a_live_token_is_looked_up() -> None:
    """A token inside its window does reach ``link_token``: the fake above would have seen a lookup."""

    @contextmanager
    def transaction(engine: Any) -> Iterator[Any]:
        yield _InsertOnlySession()

    store = LinkStore(LinkSigner(b"L" * 32), timedelta(hours=72), LinkPorts(transaction, _Audit()))  # type: ignore[arg-type]
    live = store.signer.mint(datetime.now(UTC) + timedelta(hours=72))
    with pytest.raises(AssertionError):
        store.redeem(None, live)  # type: ignore[arg-type]
