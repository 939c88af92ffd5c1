"""EHR notifications naming a resource id that is no FHIR id, over real loopback HTTP: refused at intake
with a 400 OperationOutcome, so nothing is stored that could only fail on re-read (and be retried as
if the EHR were down). FHIR's id grammar is ``[A-Za-z0-9\\-\\.]{1,64}`` (R4 datatypes.html#id); ``.`` and
``..`` fit it but name no resource. The refusal comes before the inbox, so no database is involved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ehr.hook_secrets import derive_secret
from ehr.intake import build_intake_router
from ehr.notifications import IncomingNotification, is_fhir_id
from tests.support.asgi_server import serve_in_thread
from tests.support.fakes import InMemoryNotificationSink

MASTER = b"synthetic-master-secret-for-tests"
HEADERS = {"Authorization": f"Bearer {derive_secret(MASTER, 'appointment')}", "Content-Type": "application/fhir+json"}
ENDPOINT = "/ehr/notify/appointment"
NOT_IDS = ["..", ".", "a\n", "x" * 65, "a/b", "a b", "\u00e9t\u00e9"]


@pytest.fixture
def intake() -> Iterator[tuple[httpx.Client, InMemoryNotificationSink]]:
    sink = InMemoryNotificationSink()
    app = FastAPI()
    app.include_router(build_intake_router(sink, MASTER, ["appointment"], 64 * 1024))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http, sink


def appointment(resource_id: str, version: str = "1") -> dict[str, Any]:
    return {"resourceType": "Appointment", "id": resource_id, "meta": {"versionId": version}, "status": "booked",
            "participant": [{"status": "accepted"}]}


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "invalid" and "not a FHIR id" in issue["diagnostics"]


@pytest.mark.parametrize("resource_id", NOT_IDS)
def test_a_resource_whose_id_is_no_fhir_id_is_refused(intake: tuple[httpx.Client, InMemoryNotificationSink],
                                                      resource_id: str) -> None:
    http, sink = intake
    response = http.post(ENDPOINT, content=json.dumps(appointment(resource_id)), headers=HEADERS)
    if resource_id in ("..", ".", "a\n"):  # fit the id pattern as the parser checks it (``$`` allows "\n")
        assert_refused(response)
    else:  # refused by the parser already
        assert response.status_code == 400, response.text
    assert sink.received == []


def test_one_bad_id_in_a_bundle_refuses_the_notification(intake: tuple[httpx.Client, InMemoryNotificationSink]) -> None:
    http, sink = intake
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": appointment("a1")}, {"fullUrl": "https://ehr.example/fhir/Appointment/.."}]}
    assert_refused(http.post(ENDPOINT, content=json.dumps(bundle), headers=HEADERS))
    assert sink.received == []  # nothing of it stored: the EHR gets a 400 and the rest stays consistent
    bundle["entry"] = bundle["entry"][:1]
    assert http.post(ENDPOINT, content=json.dumps(bundle), headers=HEADERS).status_code == 200
    assert sink.received == [IncomingNotification("appointment", "resource", "Appointment", "a1", "1")]


def test_a_version_that_is_no_fhir_id_is_refused(intake: tuple[httpx.Client, InMemoryNotificationSink]) -> None:
    http, sink = intake
    assert_refused(http.post(ENDPOINT, content=json.dumps(appointment("a1", version="..")), headers=HEADERS))
    assert sink.received == []


@pytest.mark.parametrize("path", ["/Appointment/%2E%2E", "/Appointment/%2E"])
def test_an_id_in_the_url_that_is_no_fhir_id_is_refused(intake: tuple[httpx.Client, InMemoryNotificationSink],
                                                        path: str) -> None:
    http, sink = intake
    assert_refused(http.put(ENDPOINT + path, headers=HEADERS))
    assert sink.received == []


def test_the_fhir_id_grammar() -> None:
    assert all(is_fhir_id(value) for value in ["a", "A-1.b", "x" * 64, "..a", "a.."])
    assert not any(is_fhir_id(value) for value in [*NOT_IDS, ""])
