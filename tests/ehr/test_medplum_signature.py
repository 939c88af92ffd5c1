"""Medplum's signed rest-hook (https://www.medplum.com/docs/subscriptions/subscription-extensions#signatures)
over real loopback HTTP, into the real inbox and audit trail: ``X-Signature`` = hex HMAC-SHA256 of the body
keyed with the Subscription's ``subscription-secret`` (the per-key secret the bridge derives).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import InboxEvent
from ehr.hook_secrets import authorization_header, derive_secret
from ehr.intake import build_intake_router
from tests.support.asgi_server import serve_in_thread
from tests.support.synthetic import synthetic_appointment

MASTER = b"M" * 32
SIGNED, PLAIN = "appointment", "diagnostic-report"
SECRET = derive_secret(MASTER, SIGNED)


def medplum_signature(secret: str, body: bytes) -> str:
    """What Medplum computes: createHmac('sha256', secret).update(body).digest('hex')."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(appointment_id: str = "a1") -> bytes:
    resource = synthetic_appointment("Patient/p1", appointment_id=appointment_id)
    resource["meta"]["versionId"] = "2"
    return json.dumps(resource).encode()


class Site:
    def __init__(self, engine: Engine, url: str) -> None:
        self.engine, self.url = engine, url

    def post(self, body: bytes, headers: dict[str, str], key: str = SIGNED) -> httpx.Response:
        return httpx.post(f"{self.url}/ehr/notify/{key}", content=body, timeout=10,
                          headers={"Content-Type": "application/fhir+json", **headers})

    def stored(self) -> list[tuple[str, str | None]]:
        with Session(self.engine) as session:
            return [(row.subscription_key, row.resource_id) for row in session.exec(select(InboxEvent))]

    def alerts(self) -> list[str]:
        with Session(self.engine) as session:
            rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))
            return [json.loads(row.detail or "{}")["reason"] for row in rows if row.kind == "security-alert"]


@pytest.fixture
def site(engine: Engine) -> Iterator[Site]:
    inbox = InboxStore(engine)
    app = FastAPI()
    app.include_router(build_intake_router(inbox, MASTER, [SIGNED, PLAIN], 1 << 16, on_refused=inbox.refused,
                                           signed_keys=[SIGNED]))
    with serve_in_thread(app) as url:
        yield Site(engine, url)


def test_a_notification_signed_the_medplum_way_is_stored(site: Site) -> None:
    body = body_of()
    response = site.post(body, {"X-Signature": medplum_signature(SECRET, body)})
    assert response.status_code == 200, response.text
    assert site.stored() == [(SIGNED, "a1")]
    assert site.alerts() == []


def test_a_wrong_or_missing_signature_is_refused_and_alerted(site: Site) -> None:
    body = body_of()
    wrong = medplum_signature(derive_secret(b"W" * 32, SIGNED), body)
    assert site.post(body, {"X-Signature": wrong}).status_code == 403
    missing = site.post(body, {})
    assert missing.status_code == 401 and "X-Signature" in missing.headers["WWW-Authenticate"]
    # The header secret is no substitute on a signed endpoint: only the signature binds the body.
    assert site.post(body, {"Authorization": authorization_header(SECRET)}).status_code == 401
    assert site.stored() == []
    alerts = site.alerts()  # the refusal budget audits the first of each reason and minute in full
    assert alerts[:2] == ["wrong_secret", "missing_secret"]
    assert set(alerts[2:]) <= {"missing_secret", "refusals-summarised"}, alerts


def test_a_body_altered_after_signing_is_refused(site: Site) -> None:
    signature = medplum_signature(SECRET, body_of("a1"))
    assert site.post(body_of("a2"), {"X-Signature": signature}).status_code == 403
    assert site.stored() == []
    assert site.alerts() == ["wrong_secret"]


def test_an_unsigned_endpoint_still_wants_its_header_secret(site: Site) -> None:
    body = body_of()
    signed_only = {"X-Signature": medplum_signature(derive_secret(MASTER, PLAIN), body)}
    assert site.post(body, signed_only, key=PLAIN).status_code == 401
    headed = {"Authorization": authorization_header(derive_secret(MASTER, PLAIN))}
    assert site.post(body, headed, key=PLAIN).status_code == 200
    assert site.stored() == [(PLAIN, "a1")]
