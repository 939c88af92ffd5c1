"""Portal link tokens and the opt-in registry on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.link_access import LINK_PORTS
from adapter.outbox.action_tokens import insert_tokens, mint_action_token, resolve_action_token
from adapter.recipients.consent import OPTED_IN, OPTED_OUT, AssumedConsent, RegistryConsent, set_consent
from adapter.storage.db import transaction
from portal_links.store import LinkOutcome, LinkStore
from portal_links.tokens import LinkSigner, TokenProblem, TokenRefused

KEY = b"L" * 32


def mint(engine: Engine, store: LinkStore, **kw: object) -> str:
    with transaction(engine) as session:
        return store.mint(session, purpose="diagnostic-report-ready", target="report", patient_ref="Patient/1",
                          resource_ref="DiagnosticReport/1", **kw)  # type: ignore[arg-type]


def test_token_is_short_opaque_and_only_its_hash_is_stored(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store)
    assert len(token) < 100 and "Patient" not in token and "DiagnosticReport" not in token
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT token_hash FROM link_token")).scalar_one()
    assert bytes(stored) != token.encode() and len(bytes(stored)) == 32


def test_redeem_counts_opens_up_to_the_limit(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store, max_opens=2)
    assert store.redeem(engine, token).outcome is LinkOutcome.OPENED
    assert store.redeem(engine, token).target == "report"
    assert store.redeem(engine, token).outcome is LinkOutcome.EXHAUSTED


def test_altered_token_is_refused_by_signature(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = mint(engine, store)
    altered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert store.redeem(engine, altered).outcome is LinkOutcome.MALFORMED
    with pytest.raises(TokenRefused) as refused:
        LinkSigner(b"X" * 32).verify(token)  # another deployment's key
    assert refused.value.problem is TokenProblem.MALFORMED


def test_expired_token_is_refused_without_lookup() -> None:
    signer = LinkSigner(KEY)
    token = signer.mint(datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(TokenRefused) as refused:
        signer.verify(token)
    assert refused.value.problem is TokenProblem.EXPIRED


def test_valid_signature_but_unknown_row_is_unknown(engine: Engine) -> None:
    store = LinkStore(LinkSigner(KEY), timedelta(hours=72), LINK_PORTS)
    token = LinkSigner(KEY).mint(datetime.now(UTC) + timedelta(hours=1))
    assert store.redeem(engine, token).outcome is LinkOutcome.UNKNOWN


def test_action_token_resolves_to_its_appointment_version(engine: Engine) -> None:
    with transaction(engine) as session:
        token = mint_action_token(session, action="confirm", patient_ref="Patient/1",
                                  resource_ref="Appointment/7", version_id="3")
    assert len(token) <= 256
    with Session(engine) as session:
        row = resolve_action_token(session, token)
        assert row is not None and (row.resource_ref, row.version_id, row.action) == ("Appointment/7", "3", "confirm")
        assert resolve_action_token(session, token + "x") is None


def test_tokens_minted_together_are_written_in_one_insert_and_resolve(engine: Engine) -> None:
    minted: list[Any] = []
    sink = SimpleNamespace(add=minted.append)  # what the decide step mints into until the message is queued
    tokens = [mint_action_token(sink, action=action, patient_ref="Patient/1", resource_ref="Appointment/7",
                                version_id="3") for action in ("confirm", "cancel")]
    with transaction(engine) as session:
        insert_tokens(session, minted)
        insert_tokens(session, [])  # nothing to write: no statement
    with Session(engine) as session:
        rows = [resolve_action_token(session, token) for token in tokens]
        assert [(row.action, row.version_id, row.used_at) for row in rows if row] == [
            ("confirm", "3", None), ("cancel", "3", None)]


def test_registry_consent_needs_opt_in_and_honours_opt_out(engine: Engine) -> None:
    registry, assumed = RegistryConsent(), AssumedConsent()
    with transaction(engine) as session:
        assert not registry.may_message(session, "Patient/1") and assumed.may_message(session, "Patient/1")
        set_consent(session, "Patient/1", OPTED_IN, "admin")
    with transaction(engine) as session:
        assert registry.may_message(session, "Patient/1")
        set_consent(session, "Patient/1", OPTED_OUT, "chat")
    with transaction(engine) as session:
        assert not registry.may_message(session, "Patient/1") and not assumed.may_message(session, "Patient/1")
    with pytest.raises(ValueError, match="FHIR reference"), transaction(engine) as session:
        set_consent(session, "123", OPTED_IN, "admin")
