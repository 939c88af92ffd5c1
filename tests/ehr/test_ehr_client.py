"""FhirClient against the real sekmet FHIR server, plus error mapping for answers sekmet never gives."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from ehr.auth import FhirAuth
from ehr.client import FhirClient
from ehr.errors import (
    FhirAuthError,
    FhirConflictError,
    FhirError,
    FhirInvalidResponseError,
    FhirNotFoundError,
    FhirPagingLimitError,
    FhirRequestError,
    FhirUnavailableError,
)
from tests.support.fhir_server import free_port
from tests.support.synthetic import PATIENT_NAME, synthetic_appointment, synthetic_location

# --- against the real server ------------------------------------------------------------


@pytest.mark.fhir
async def test_create_read_update_vread_delete(fhir_client: FhirClient) -> None:
    created = await fhir_client.create(synthetic_location(name="Synthetic Clinic A"))
    assert created["meta"]["versionId"] == "1"

    read = await fhir_client.read("Location", created["id"])
    assert read == created

    updated = await fhir_client.update({**read, "name": "Synthetic Clinic B"}, if_match=read["meta"]["versionId"])
    assert updated["meta"]["versionId"] == "2"
    assert (await fhir_client.vread("Location", created["id"], "1"))["name"] == "Synthetic Clinic A"
    assert (await fhir_client.read("Location", created["id"]))["name"] == "Synthetic Clinic B"

    await fhir_client.delete("Location", created["id"])
    with pytest.raises(FhirNotFoundError) as deleted:
        await fhir_client.read("Location", created["id"])
    assert deleted.value.status_code == 410


@pytest.mark.fhir
async def test_read_of_a_missing_resource_is_not_found(fhir_client: FhirClient) -> None:
    missing = f"missing-{uuid.uuid4().hex}"
    with pytest.raises(FhirNotFoundError) as caught:
        await fhir_client.read("Appointment", missing)
    error = caught.value
    assert (error.operation, error.resource_type, error.status_code) == ("read", "Appointment", 404)
    assert error.diagnostics == "error:not-found"
    assert missing not in str(error)  # sekmet's diagnostics text quotes the id; we keep codes only


@pytest.mark.fhir
async def test_update_with_a_stale_if_match_is_a_conflict(fhir_client: FhirClient) -> None:
    created = await fhir_client.create(synthetic_location())
    await fhir_client.update({**created, "name": "Synthetic Clinic Moved"}, if_match='W/"1"')
    with pytest.raises(FhirConflictError) as caught:
        await fhir_client.update({**created, "name": "Synthetic Clinic Stale"}, if_match="1")
    assert caught.value.status_code == 412
    assert (await fhir_client.read("Location", created["id"]))["name"] == "Synthetic Clinic Moved"


@pytest.mark.fhir
async def test_search_follows_next_links_to_the_last_page(fhir_client: FhirClient) -> None:
    name = f"Synthetic Paging {uuid.uuid4().hex}"
    ids = {(await fhir_client.create(synthetic_location(name=name)))["id"] for _ in range(7)}

    found = await fhir_client.search("Location", [("name", name), ("_count", "3")])

    assert {location["id"] for location in found} == ids
    assert len(found) == 7


@pytest.mark.fhir
async def test_search_refuses_more_pages_than_allowed(fhir_client: FhirClient) -> None:
    name = f"Synthetic Bound {uuid.uuid4().hex}"
    for _ in range(5):
        await fhir_client.create(synthetic_location(name=name))
    with pytest.raises(FhirPagingLimitError):
        await fhir_client.search("Location", [("name", name), ("_count", "2")], max_pages=2)
    assert len(await fhir_client.search("Location", [("name", name), ("_count", "2")], max_pages=3)) == 5


@pytest.mark.fhir
async def test_search_without_matches_is_empty(fhir_client: FhirClient) -> None:
    assert await fhir_client.search("Location", [("name", f"Nothing {uuid.uuid4().hex}")]) == []


@pytest.mark.fhir
async def test_an_invalid_resource_is_a_request_error(fhir_client: FhirClient) -> None:
    appointment = synthetic_appointment()
    del appointment["status"]  # required in R4: sekmet's strict validation refuses it
    with pytest.raises(FhirRequestError) as caught:
        await fhir_client.create(appointment)
    assert caught.value.status_code == 400
    assert caught.value.diagnostics is not None and "error:structure" in caught.value.diagnostics


@pytest.mark.fhir
async def test_capabilities(fhir_client: FhirClient) -> None:
    statement = await fhir_client.capabilities()
    assert statement["fhirVersion"] == "4.0.1"


async def test_a_server_that_is_down_is_unavailable() -> None:
    async with FhirClient(f"http://127.0.0.1:{free_port()}/fhir", FhirAuth.none(), 2.0) as client:
        with pytest.raises(FhirUnavailableError) as caught:
            await client.read("Appointment", "1")
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert "could not reach" in str(caught.value)
    assert caught.value.status_code is None


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_a_server_that_does_not_answer_times_out(silent_server: int) -> None:
    async with FhirClient(f"http://127.0.0.1:{silent_server}/fhir", FhirAuth.none(), 0.3) as client:
        with pytest.raises(FhirUnavailableError) as caught:
            await client.read("Appointment", "1")
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)


# --- answers sekmet does not give: httpx.MockTransport ---------------------------------------


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> FhirClient:
    return FhirClient("https://ehr.example/fhir", FhirAuth.none(), 5.0, httpx.MockTransport(handler))


def outcome(code: str, text: str = "") -> bytes:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, FhirAuthError), (403, FhirAuthError), (404, FhirNotFoundError), (410, FhirNotFoundError),
        (409, FhirConflictError), (412, FhirConflictError), (400, FhirRequestError), (422, FhirRequestError),
        (302, FhirRequestError), (429, FhirUnavailableError), (500, FhirUnavailableError),
        (502, FhirUnavailableError), (503, FhirUnavailableError),
    ],
)
async def test_status_codes_map_to_error_classes(status: int, error_type: type[FhirError]) -> None:
    async with mock_client(lambda request: httpx.Response(status, content=outcome("processing"))) as client:
        with pytest.raises(error_type) as caught:
            await client.read("Appointment", "a1")
    assert caught.value.status_code == status
    assert caught.value.diagnostics == "error:processing"


async def test_retry_after_is_kept() -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "7"}, content=b"<html>maintenance</html>")

    async with mock_client(busy) as client:
        with pytest.raises(FhirUnavailableError) as caught:
            await client.search("Appointment", [("status", "booked")])
    assert caught.value.retry_after == 7.0
    assert caught.value.diagnostics is None


async def test_error_messages_never_carry_the_servers_diagnostics_text() -> None:
    leaky = outcome("business-rule", f"Patient {PATIENT_NAME} (+1 201-555-0100) cannot be booked")
    async with mock_client(lambda request: httpx.Response(422, content=leaky)) as client:
        with pytest.raises(FhirRequestError) as caught:
            await client.update({"resourceType": "Appointment", "id": "a1", "status": "booked"})
    assert caught.value.diagnostics == "error:business-rule"
    assert "Testpatient" not in str(caught.value) and "555" not in str(caught.value)


@pytest.mark.parametrize("body", [b"not json", b'{"resourceType": "Patient", "id": "x"}', b"[]"])
async def test_a_2xx_answer_that_is_not_the_expected_resource_is_invalid(body: bytes) -> None:
    async with mock_client(lambda request: httpx.Response(200, content=body)) as client:
        with pytest.raises(FhirInvalidResponseError):
            await client.read("Appointment", "a1")


async def test_next_links_to_another_host_are_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        page = {"resourceType": "Bundle", "type": "searchset",
                "link": [{"relation": "next", "url": "https://internal-host:8080/fhir/Appointment?page=2"}]}
        return httpx.Response(200, json=page)

    async with mock_client(handler) as client:
        with pytest.raises(FhirInvalidResponseError):
            await client.search("Appointment")
    assert seen == ["https://ehr.example/fhir/Appointment"]


async def test_requests_are_fhir_json_and_ids_cannot_change_the_path() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"resourceType": "Appointment", "id": "a1", "meta": {"versionId": "4"}})

    async with mock_client(handler) as client:
        await client.update({"resourceType": "Appointment", "id": "a1", "status": "booked"}, if_match="3")
        with pytest.raises(FhirRequestError):
            await client.read("Appointment", "../Patient/1")
        with pytest.raises(FhirRequestError):
            await client.read("appointment?x=1", "a1")
    [update] = requests
    assert (update.method, str(update.url)) == ("PUT", "https://ehr.example/fhir/Appointment/a1")
    assert update.headers["Accept"] == "application/fhir+json"
    assert update.headers["Content-Type"] == "application/fhir+json"
    assert update.headers["If-Match"] == 'W/"3"'


async def test_create_rereads_when_the_server_returns_no_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, headers={"Location": "https://ehr.example/fhir/Location/l9/_history/1"})
        assert str(request.url) == "https://ehr.example/fhir/Location/l9/_history/1"
        return httpx.Response(200, json={"resourceType": "Location", "id": "l9", "meta": {"versionId": "1"}})

    async with mock_client(handler) as client:
        created = await client.create(synthetic_location())
    assert created["id"] == "l9"
