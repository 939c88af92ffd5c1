"""Medplum's delete notifications over real loopback HTTP, into the real inbox: a signed POST whose body is
``{}`` and whose ``X-Medplum-Deleted-Resource`` header names the resource
(https://www.medplum.com/docs/subscriptions/subscription-extensions) is acknowledged with 200 and stored
as that resource's reference (the pipeline re-reads it and finds it gone); without a usable header it is
a ping; signed wrongly it is refused like any other body."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from adapter.feeds.tables import InboxEvent
from ehr.hook_secrets import derive_secret
from tests.ehr.test_medplum_signature import SECRET, SIGNED, Site, medplum_signature, site

__all__ = ["site"]  # the fixture, shared with the signature tests
EMPTY = b"{}"


def _events(site: Site) -> list[tuple[str, str | None, str | None]]:
    with Session(site.engine) as session:
        return [(row.kind, row.resource_type, row.resource_id) for row in session.exec(select(InboxEvent))]


def test_a_signed_delete_is_stored_as_the_deleted_resource(site: Site) -> None:
    response = site.post(EMPTY, {"X-Signature": medplum_signature(SECRET, EMPTY),
                                 "X-Medplum-Deleted-Resource": "Appointment/a9"})
    assert response.status_code == 200, response.text
    assert _events(site) == [("resource", "Appointment", "a9")]
    assert site.alerts() == []


@pytest.mark.parametrize("headers", [{}, {"X-Medplum-Deleted-Resource": "Patient/p1"},
                                     {"X-Medplum-Deleted-Resource": "Appointment/../x"},
                                     {"X-Medplum-Deleted-Resource": "not a reference"}])
def test_an_empty_object_naming_nothing_handled_here_is_a_ping(site: Site, headers: dict[str, str]) -> None:
    for body in (EMPTY, b" { }\n", b""):
        response = site.post(body, {"X-Signature": medplum_signature(SECRET, body), **headers})
        assert response.status_code == 200, response.text
    assert {kind for kind, _, _ in _events(site)} <= {"ping"}
    assert all(resource_id is None for _, _, resource_id in _events(site))
    assert site.alerts() == []


def test_a_wrongly_signed_or_unsigned_delete_is_refused(site: Site) -> None:
    deleted = {"X-Medplum-Deleted-Resource": "Appointment/a9"}
    wrong = medplum_signature(derive_secret(b"W" * 32, SIGNED), EMPTY)
    assert site.post(EMPTY, {"X-Signature": wrong, **deleted}).status_code == 403
    assert site.post(b"{ }", {"X-Signature": medplum_signature(SECRET, EMPTY), **deleted}).status_code == 403
    missing = site.post(EMPTY, deleted)
    assert missing.status_code == 401 and "X-Signature" in missing.headers["WWW-Authenticate"]
    assert _events(site) == []
    alerts = site.alerts()  # the refusal budget audits the first of each reason and minute in full
    assert alerts[:2] == ["wrong_secret", "missing_secret"], alerts
