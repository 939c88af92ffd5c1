"""Every metric family the README lists, scraped from ``GET /metrics`` over real HTTP around real work:
sends through the emulator (one retried after a Meta error, one undeliverable, one accepted and then
reported failed by webhook), the EHR's own notifications and a refused one, a notification of an
appointment the EHR does not hold, and a sending rate low enough that the retry waits its turn. Each
counter must move by what that work implies; each gauge family must be there with its fixed labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.demo.stack import DemoStack, start_stack, wait_for
from ehr.hook_secrets import authorization_header, derive_secret
from tests.support.e2e import create, health, patient, sent_to
from tests.support.synthetic import synthetic_appointment

pytestmark = pytest.mark.fhir

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
GAUGES = ("bridge_metrics_database_up", "bridge_outbox_messages", "bridge_outbox_dead_letters", "bridge_queue_depth",
          "bridge_queue_oldest_age_seconds", "bridge_feed_up", "bridge_feed_last_ok_age_seconds",
          "bridge_audit_chain_pending", "bridge_audit_unsigned", "bridge_open_alerts", "bridge_templates",
          "bridge_sending_paused")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    # One message a second: a retry 0.2 s after its first attempt must wait for the pacing bucket.
    stack = start_stack(tmp_path_factory.mktemp("metrics-coverage"), dispatch_backoff_seconds=0.2,
                        whatsapp_messages_per_second=1)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def _scrape(stack: DemoStack) -> tuple[set[str], Samples]:
    response = httpx.get(f"{stack.settings.public_base_url}/metrics", timeout=10)
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in families for sample in family.samples}
    return {family.name for family in families}, samples


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name and all((key, wanted) in found for key, wanted in labels.items()))


def _fault(stack: DemoStack, fault: dict[str, object]) -> None:
    httpx.post(f"{stack.emulator.base_url}/_emulator/faults", json={"responses": [fault]},
               timeout=5).raise_for_status()


def _until(stack: DemoStack, what: str, moved: Callable[[Samples], bool]) -> Samples:
    """Scrapes until ``moved`` holds (the counters move once the outcome is committed)."""
    def check() -> Samples | None:
        _, samples = _scrape(stack)
        return samples if moved(samples) else None
    return wait_for(check, 30, what)


def test_every_listed_family_is_exposed_and_the_counters_move(stack: DemoStack) -> None:
    _, before = _scrape(stack)

    def grew(name: str, **labels: str) -> Callable[[Samples], bool]:
        return lambda after: _total(after, name, **labels) > _total(before, name, **labels)

    # A Meta error worth retrying (131000), then the retry goes out, after waiting for the pacing bucket.
    _fault(stack, {"http_status": 500, "code": 131000})
    create(stack, synthetic_appointment(patient(stack, 51)))
    wait_for(lambda: sent_to(stack, 51), 30, "the retried send")
    _until(stack, "the retried send counted", grew("bridge_whatsapp_send_results_total", result="sent"))
    # Undeliverable (131026) at once: a dead letter.
    _fault(stack, {"http_status": 400, "code": 131026})
    create(stack, synthetic_appointment(patient(stack, 52)))
    _until(stack, "the dead letter", grew("bridge_whatsapp_dead_letters_total"))
    # Accepted, then reported failed by webhook (131026 again): a delivery failure.
    _fault(stack, {"fail_status": {"code": 131026}})
    create(stack, synthetic_appointment(patient(stack, 53)))
    _until(stack, "the failed status", grew("bridge_whatsapp_delivery_failures_total", code="131026"))
    # A notification of an appointment the EHR does not hold (its read fails with 404), and one refused.
    missing = f"{stack.settings.public_base_url}/ehr/notify/appointment/Appointment/metrics-missing"
    secret = derive_secret(stack.settings.ehr_hook_secret.get_secret_value().encode(), "appointment")
    assert httpx.put(missing, headers={"Authorization": authorization_header(secret)}, timeout=10).status_code == 200
    assert httpx.put(missing, timeout=10).status_code == 401
    after = _until(stack, "the failed EHR read", grew("bridge_ehr_request_errors_total", error="404"))
    after = _until(stack, "the delivered status", grew("bridge_whatsapp_delivery_statuses_total", status="delivered"))

    for name, labels in (
            ("bridge_whatsapp_send_results_total", {"result": "sent"}),
            ("bridge_whatsapp_send_results_total", {"result": "retry"}),
            ("bridge_whatsapp_send_results_total", {"result": "dead"}),
            ("bridge_whatsapp_send_errors_total", {"code": "131000"}),
            ("bridge_whatsapp_send_errors_total", {"code": "131026"}),
            ("bridge_whatsapp_dead_letters_total", {}),
            ("bridge_whatsapp_delivery_statuses_total", {"status": "sent"}),
            ("bridge_whatsapp_delivery_statuses_total", {"status": "failed"}),
            ("bridge_whatsapp_delivery_failures_total", {"code": "131026"}),
            ("bridge_whatsapp_webhook_duration_seconds_count", {"status": "200"}),
            ("bridge_ehr_webhook_duration_seconds_count", {"status": "200"}),
            ("bridge_ehr_webhook_duration_seconds_count", {"status": "401"}),
            ("bridge_ehr_request_duration_seconds_count", {"operation": "read", "resource_type": "Appointment"}),
            ("bridge_ehr_request_errors_total", {"error": "404"}),
            ("bridge_pacing_waits_total", {}),
            ("bridge_pacing_wait_seconds_total", {}),
            ("bridge_outbox_dead_letters", {}),
    ):
        assert _total(after, name, **labels) > _total(before, name, **labels), (name, labels)
    templates = {dict(labels)["template"] for (name, labels), value in after.items()
                 if name == "bridge_whatsapp_delivery_statuses_total" and value > 0}
    assert templates and templates <= {dict(labels)["template"] for (name, labels) in after
                                       if name == "bridge_whatsapp_send_results_total"}  # labelled alike

    families, after = _scrape(stack)
    assert set(GAUGES) <= families, set(GAUGES) - families
    for queue in ("inbox", "outbox", "statuses", "inbound", "actions"):
        assert ("bridge_queue_depth", (("queue", queue),)) in after
        assert after[("bridge_queue_oldest_age_seconds", (("queue", queue),))] >= 0
    assert _total(after, "bridge_outbox_messages", state="queued") > 0  # the bookings' reminders, planned
    assert _total(after, "bridge_metrics_database_up") == 1 and _total(after, "bridge_sending_paused") == 0
    assert any(name == "bridge_feed_up" for name, _ in after)
    assert ("bridge_audit_chain_pending", ()) in after
