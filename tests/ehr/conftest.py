"""Fixtures of the polling tests: each module gets a FHIR server of its own (its ``_lastUpdated``
history is what the tests read), and a client of it per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from ehr.client import FhirClient
from tests.support.fhir_server import RunningFhirServer, start_fhir_server


@pytest.fixture(scope="module")
def own_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    server = start_fhir_server(tmp_path_factory.mktemp(f"{request.module.__name__.rsplit('.', 1)[-1]}-ehr"))
    yield server
    server.stop()


@pytest_asyncio.fixture
async def ehr(own_server: RunningFhirServer) -> AsyncIterator[FhirClient]:
    async with FhirClient(own_server.base_url) as client:
        yield client
