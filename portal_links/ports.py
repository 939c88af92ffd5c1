"""What portal links need from the service that hosts them, declared here and passed in.

Portal links own their rows (:mod:`portal_links.tables`) but not the host's write discipline or its
audit trail. The host supplies how a write transaction is opened (the service's takes turns between
writers on SQLite) and where link requests and revocations are audited: in that same transaction,
so that an audit entry commits or rolls back with what it records (45 CFR 164.312(b) audit controls).
The service implements them in :mod:`adapter.audit.link_access`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session


class RowSink(Protocol):
    """Where new rows go: a Session, or a list that is added to one only if the step succeeds."""

    def add(self, instance: Any) -> None: ...


class OpenTransaction(Protocol):
    """Opens a write transaction on ``engine``: commits when the block succeeds, rolls back on any error."""

    def __call__(self, engine: Engine, /) -> AbstractContextManager[Session]: ...


class LinkAudit(Protocol):
    """Audits what happens to links, in the caller's transaction, with references only (never a token
    or its hash)."""

    def link_request(self, session: Session, *, link_id: int | None, patient_ref: str | None, outcome: str,
                     client: str | None, ua_class: str, method: str, at: datetime) -> None:
        """One request to a link (preview, open or refusal) as its ``link_request`` row records it."""

    def revocation(self, session: Session, *, agent: str, scope: str, revoked: int, at: datetime,
                   entity_ref: str | None, patient_ref: str | None,
                   window: tuple[datetime, datetime] | None) -> None:
        """One revocation: who revoked which ``scope`` (link, message, patient, window), and how many."""


@dataclass(frozen=True)
class LinkPorts:
    """The host's implementations, handed to :class:`portal_links.store.LinkStore` and the revocations."""

    transaction: OpenTransaction
    audit: LinkAudit
