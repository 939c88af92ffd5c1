"""``GET /metrics`` over real HTTP: a real send through the emulator moves the counters, the exposition
parses, and no label holds a number, message id or token."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.settings import DEMO_SECRET
from tests.support.e2e import create, health, patient, sent_to
from tests.support.synthetic import synthetic_appointment

pytestmark = pytest.mark.fhir

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LONG_DIGITS = re.compile(r"\d{7,}")  # a phone number, an outbox or message id; Meta codes have 6 digits
TOKEN_LIKE = re.compile(r"(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.=+/]{16,}")  # long, mixed letters and digits


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("metrics"), dispatch_backoff_seconds=0.2)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def _scrape(stack: DemoStack) -> tuple[str, Samples]:
    response = httpx.get(f"{stack.settings.public_base_url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.text) for sample in family.samples}
    return response.text, samples


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name and all((key, wanted) in found for key, wanted in labels.items()))


def test_a_real_send_moves_the_counters_and_no_label_holds_an_identifier(stack: DemoStack) -> None:
    _, before = _scrape(stack)
    patient_ref = patient(stack, 31)
    create(stack, synthetic_appointment(patient_ref))
    [message] = wait_for(lambda: sent_to(stack, 31), 20, "the confirmation")
    template = message["template"]["name"]

    def moved() -> tuple[str, Samples] | None:
        text, after = _scrape(stack)
        sent = _total(after, "bridge_whatsapp_send_results_total", result="sent", template=template)
        webhooks = _total(after, "bridge_whatsapp_webhook_duration_seconds_count", status="200")
        if sent > _total(before, "bridge_whatsapp_send_results_total", result="sent", template=template) \
                and webhooks > _total(before, "bridge_whatsapp_webhook_duration_seconds_count", status="200"):
            return text, after
        return None

    text, after = wait_for(moved, 20, "the send and its status webhook counted")  # counted after the commit
    ehr_calls = "bridge_ehr_request_duration_seconds_count"
    assert _total(after, ehr_calls) > _total(before, ehr_calls)  # the patient's number was looked up
    assert _total(after, "bridge_metrics_database_up") == 1
    for queue in ("inbox", "outbox", "statuses", "inbound", "actions"):
        assert ("bridge_queue_depth", (("queue", queue),)) in after
    assert any(name == "bridge_feed_up" for name, _ in after)

    for (name, labels), _ in after.items():
        for value in (name, *(value for _, value in labels)):
            assert not LONG_DIGITS.search(value) and not TOKEN_LIKE.search(value), (name, labels)
    number = message["to"]
    for secret in (number, "wamid", DEMO_SECRET, stack.settings.ehr_hook_secret.get_secret_value(),
                   patient_ref, patient_ref.split("/")[1]):
        assert secret not in text
