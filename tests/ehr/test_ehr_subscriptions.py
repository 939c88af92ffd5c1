"""ensure_subscriptions / subscription_status against the real sekmet server.

The endpoints point at a closed loopback port under a per-test path, and every Subscription a
test leaves is deleted, so nothing is ever delivered from here and tests cannot see each other's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from ehr.client import FhirClient
from ehr.hook_secrets import MEDPLUM_SECRET_EXTENSION, channel_header, derive_secret
from ehr.subscriptions import (
    DEFAULT_SUBSCRIPTION_SPECS,
    SubscriptionSpec,
    default_specs,
    ensure_subscriptions,
    notify_endpoint,
    subscription_status,
)

MASTER = b"synthetic-master-secret-for-tests"
pytestmark = pytest.mark.fhir


@pytest_asyncio.fixture
async def public_base_url(fhir_client: FhirClient) -> AsyncIterator[str]:
    base = f"http://127.0.0.1:9/bridge-{uuid.uuid4().hex[:10]}"
    yield base
    for sub in await fhir_client.search("Subscription", [("_count", "200")]):
        if str(sub.get("channel", {}).get("endpoint", "")).startswith(base):
            await fhir_client.delete("Subscription", sub["id"])


async def on_server(client: FhirClient, base: str, key: str) -> list[dict[str, Any]]:
    return await client.search("Subscription", [("url", notify_endpoint(base, key))])


def subscription(base: str, key: str, *, criteria: str, header: str, status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Subscription", "status": status, "reason": "synthetic test", "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": notify_endpoint(base, key), "payload": "application/fhir+json",
                    "header": [header]},
    }


async def test_ensuring_twice_leaves_exactly_one_subscription_per_spec(
    fhir_client: FhirClient, public_base_url: str
) -> None:
    first = await ensure_subscriptions(fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url, MASTER)
    second = await ensure_subscriptions(fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url, MASTER)

    assert [(s.key, s.action, s.status) for s in first] == [
        ("appointment", "created", "active"), ("diagnostic-report", "created", "active")]
    assert [(s.key, s.action, s.status) for s in second] == [
        ("appointment", "kept", "active"), ("diagnostic-report", "kept", "active")]
    assert [s.fhir_id for s in first] == [s.fhir_id for s in second]
    for spec in DEFAULT_SUBSCRIPTION_SPECS:
        [stored] = await on_server(fhir_client, public_base_url, spec.key)
        assert stored["criteria"] == spec.criteria
        assert stored["channel"]["payload"] == "application/fhir+json"
        assert stored["channel"]["header"] == [channel_header(derive_secret(MASTER, spec.key))]


async def test_a_subscription_in_error_is_reactivated(fhir_client: FhirClient, public_base_url: str) -> None:
    spec = DEFAULT_SUBSCRIPTION_SPECS[0]
    [created] = await ensure_subscriptions(fhir_client, [spec], public_base_url, MASTER)
    stored = await fhir_client.read("Subscription", str(created.fhir_id))
    # What sekmet itself writes after failed deliveries (it then stops notifying).
    await fhir_client.update({**stored, "status": "error", "error": "Delivery failed: synthetic"})
    [broken] = await subscription_status(fhir_client, [spec], public_base_url)
    assert (broken.status, broken.error, broken.healthy) == ("error", "Delivery failed: synthetic", False)

    [state] = await ensure_subscriptions(fhir_client, [spec], public_base_url, MASTER)

    assert (state.action, state.status, state.error, state.fhir_id) == ("reactivated", "active", None, created.fhir_id)
    assert len(await on_server(fhir_client, public_base_url, spec.key)) == 1


@pytest.mark.parametrize(
    ("criteria", "header"),
    [
        ("Appointment?status=booked", None),  # would never report cancellations
        ("Appointment", channel_header(derive_secret(b"an-older-master-secret-000", "appointment"))),
    ],
    ids=["criteria", "header"],
)
async def test_a_drifted_subscription_is_updated(
    fhir_client: FhirClient, public_base_url: str, criteria: str, header: str | None
) -> None:
    spec = DEFAULT_SUBSCRIPTION_SPECS[0]
    good_header = channel_header(derive_secret(MASTER, spec.key))
    existing = await fhir_client.create(
        subscription(public_base_url, spec.key, criteria=criteria, header=header or good_header))

    [state] = await ensure_subscriptions(fhir_client, [spec], public_base_url, MASTER)

    assert (state.action, state.status, state.fhir_id) == ("updated", "active", existing["id"])
    [stored] = await on_server(fhir_client, public_base_url, spec.key)
    assert (stored["criteria"], stored["channel"]["header"]) == ("Appointment", [good_header])


async def test_duplicates_are_deleted_and_the_working_one_kept(fhir_client: FhirClient, public_base_url: str) -> None:
    spec = DEFAULT_SUBSCRIPTION_SPECS[1]
    header = channel_header(derive_secret(MASTER, spec.key))
    stale = await fhir_client.create(
        subscription(public_base_url, spec.key, criteria="DiagnosticReport", header=header, status="off"))
    working = await fhir_client.create(subscription(public_base_url, spec.key, criteria="DiagnosticReport",
                                                    header=header))
    other = await fhir_client.create(subscription(public_base_url, spec.key, criteria="Observation", header=header))

    states = await ensure_subscriptions(fhir_client, [spec], public_base_url, MASTER)

    assert states[0].action == "kept" and states[0].fhir_id == working["id"]
    assert sorted((s.action, s.fhir_id) for s in states[1:]) == sorted(
        [("deleted-duplicate", stale["id"]), ("deleted-duplicate", other["id"])])
    assert [sub["id"] for sub in await on_server(fhir_client, public_base_url, spec.key)] == [working["id"]]


async def test_an_empty_payload_spec_has_no_channel_payload(fhir_client: FhirClient, public_base_url: str) -> None:
    full = SubscriptionSpec("ping-test", "Appointment", "full-resource")
    empty = SubscriptionSpec("ping-test", "Appointment", "empty")
    await ensure_subscriptions(fhir_client, [full], public_base_url, MASTER)

    [state] = await ensure_subscriptions(fhir_client, [empty], public_base_url, MASTER)

    assert state.action == "updated"
    [stored] = await on_server(fhir_client, public_base_url, "ping-test")
    assert "payload" not in stored["channel"]


async def test_status_reports_missing_then_active(fhir_client: FhirClient, public_base_url: str) -> None:
    before = await subscription_status(fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url)
    assert [(s.key, s.fhir_id, s.status, s.action) for s in before] == [
        ("appointment", None, None, None), ("diagnostic-report", None, None, None)]

    await ensure_subscriptions(fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url, MASTER)
    after = await subscription_status(fhir_client, DEFAULT_SUBSCRIPTION_SPECS, public_base_url)
    assert [(s.key, s.status, s.action, s.healthy) for s in after] == [
        ("appointment", "active", None, True), ("diagnostic-report", "active", None, True)]


def test_spec_keys_must_be_url_path_segments() -> None:
    with pytest.raises(ValueError):
        SubscriptionSpec("Appointment/../x", "Appointment")
    with pytest.raises(ValueError):
        SubscriptionSpec("appointment", "")


async def test_a_medplum_signed_spec_carries_the_secret_extension_instead_of_a_header(
    fhir_client: FhirClient, public_base_url: str
) -> None:
    header_spec = DEFAULT_SUBSCRIPTION_SPECS[0]
    await ensure_subscriptions(fhir_client, [header_spec], public_base_url, MASTER)
    signed = default_specs("medplum-signature")[0]
    [switched] = await ensure_subscriptions(fhir_client, [signed], public_base_url, MASTER)
    [again] = await ensure_subscriptions(fhir_client, [signed], public_base_url, MASTER)
    assert (switched.action, again.action) == ("updated", "kept")
    [stored] = await on_server(fhir_client, public_base_url, signed.key)
    assert "header" not in stored["channel"]
    assert stored["extension"] == [{"url": MEDPLUM_SECRET_EXTENSION, "valueString": derive_secret(MASTER, signed.key)}]
