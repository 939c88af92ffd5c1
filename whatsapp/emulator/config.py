"""Settings of the Cloud API emulator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from whatsapp.catalogue import TemplateCatalogue

# Synthetic identifiers (the service's demo defaults); the display number is a 555-01xx test number.
DEFAULT_PHONE_NUMBER_ID = "100000000000001"
DEFAULT_DISPLAY_NUMBER = "12015550100"
DEFAULT_WABA_ID = "200000000000002"


@dataclass(frozen=True)
class StatusDelays:
    """Seconds between acceptance and ``sent``, then ``sent``→``delivered``, then ``delivered``→``read``.

    ``None`` stops the sequence there (``read=None``: a user with read receipts off).
    """

    sent: float | None = 0.05
    delivered: float | None = 0.05
    read: float | None = 0.1


@dataclass(frozen=True)
class WebhookRetryPolicy:
    """Meta retries a webhook that did not get a 2xx with growing delays; here the attempts are bounded."""

    max_attempts: int = 5
    initial_backoff_seconds: float = 0.2
    multiplier: float = 2.0
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 5.0

    def delay_before(self, attempt: int) -> float:
        """Delay before attempt number ``attempt`` (2, 3, …)."""
        return min(self.max_backoff_seconds, self.initial_backoff_seconds * self.multiplier ** (attempt - 2))


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator needs; all values are synthetic by default."""

    access_token: str
    app_secret: str
    phone_numbers: Mapping[str, str] = field(
        default_factory=lambda: {DEFAULT_PHONE_NUMBER_ID: DEFAULT_DISPLAY_NUMBER}
    )  # phone_number_id → display phone number (digits)
    waba_id: str = DEFAULT_WABA_ID
    webhook_url: str | None = None
    public_base_url: str = "http://127.0.0.1:8000"
    catalogue: TemplateCatalogue | None = None  # None: the shipped templates with public_base_url
    status_webhooks: bool = True
    status_delays: StatusDelays = field(default_factory=StatusDelays)
    # Meta does not guarantee webhook order; True posts ``delivered`` before ``sent`` to exercise that.
    out_of_order_statuses: bool = False
    webhook_retry: WebhookRetryPolicy = field(default_factory=WebhookRetryPolicy)
    webhook_concurrency: int = 32
    # Free-form (text, interactive) messages fail with 131047 unless the user wrote in the last 24 h.
    enforce_service_window: bool = True
    service_window_seconds: float = 24 * 3600
    # Optional Meta limits, off by default so benchmarks measure the software, not the policy.
    pair_rate_limit_per_6s: int | None = None  # 131056 past this many sends to one user in 6 s
    throughput_limit_per_second: int | None = None  # 130429 past this many sends per second
    max_records: int = 50_000  # accepted messages and webhook deliveries kept for inspection

    def template_catalogue(self) -> TemplateCatalogue:
        return self.catalogue or TemplateCatalogue.load(public_base_url=self.public_base_url)
