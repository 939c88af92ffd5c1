"""Shared pytest fixtures. Register them once in ``tests/conftest.py``::

    pytest_plugins = ["tests.support.fixtures"]

``fhir_server`` is one real sekmet FHIR server for the whole session (put-resource delivery,
3 delivery retries, simulator off). Tests that need another configuration start their own with
:func:`tests.support.fhir_server.start_fhir_server`. Tests sharing the server must not assume an
empty store: give created resources unique identifiers and delete the Subscriptions they create.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from ehr.auth import FhirAuth
from ehr.client import FhirClient
from tests.support.fhir_server import RunningFhirServer, start_fhir_server


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    with start_fhir_server(tmp_path_factory.mktemp("fhir-server")) as server:
        yield server


@pytest_asyncio.fixture
async def fhir_client(fhir_server: RunningFhirServer) -> AsyncIterator[FhirClient]:
    """A :class:`FhirClient` on the session server, closed after the test."""
    async with FhirClient(fhir_server.base_url, FhirAuth.none(), timeout_seconds=10.0) as client:
        yield client
