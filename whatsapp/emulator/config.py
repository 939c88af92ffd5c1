"""Settings of the Cloud API emulator.

:class:`EmulatorConfig` is frozen: it is what the emulator starts with. The behaviour knobs that tests change
while it runs (limits, webhook quirks, the service window, ``time_scale``) are copied into
:class:`whatsapp.emulator.tunables.Tunables` at start and changed there (``PATCH /_emulator/config``).
"""

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
        """Delay before attempt number ``attempt`` (2, 3, …), in emulated seconds (before ``time_scale``)."""
        return min(self.max_backoff_seconds, self.initial_backoff_seconds * self.multiplier ** (attempt - 2))

    @classmethod
    def meta_like(cls) -> WebhookRetryPolicy:
        """A schedule shaped like Meta's: "retry with decreasing frequency", for up to 7 days.

        Meta publishes no exact schedule (Graph API "Webhooks: Getting started", WhatsApp "Webhooks"
        overview); this one starts at 30 s, doubles up to hourly and stops after about 7 days. Run it with
        a small ``time_scale`` (e.g. 0.0001) so a test sees the whole schedule in well under a second.
        """
        return cls(max_attempts=176, initial_backoff_seconds=30.0, multiplier=2.0, max_backoff_seconds=3600.0,
                   timeout_seconds=5.0)


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
    # Both are token buckets on the virtual clock (see whatsapp.emulator.limits).
    pair_rate_limit_per_6s: int | None = None  # 131056: refill of this many sends to one user per 6 s
    pair_rate_burst: int | None = None  # bucket size per (phone number id, user); None: = pair_rate_limit_per_6s
    throughput_limit_per_second: int | None = None  # 130429: sends per second per phone number id (burst = rate)
    rate_limit_tolerance_seconds: float = 0.1  # a send this much too early still passes (bucket in debt)
    max_records: int = 50_000  # accepted messages and webhook deliveries kept for inspection
    # Webhooks as Meta sends them (all off by default, so plain tests see one POST per status, in order).
    skip_delivered: bool = False  # ``read`` without ``delivered`` (Meta does not promise every status)
    duplicate_webhooks: int = 0  # extra copies of every delivery (Meta delivers at least once)
    duplicate_delay_seconds: float = 0.05  # copy k is posted k x this many real seconds after the original
    batch_statuses: int = 1  # at most this many statuses in one POST (1: no batching)
    batch_window_seconds: float = 0.05  # real seconds a batch collects statuses before it is posted
    bsuid_enabled: bool = True  # business-scoped user ids in webhooks (``user_id``, ``recipient_user_id``)
    # Real seconds = emulated seconds x time_scale, for webhook retry backoffs (Meta's schedule, compressed).
    time_scale: float = 1.0
    # Seconds of virtual time a new template stays PENDING before it is APPROVED (0: approved at once).
    template_review_seconds: float = 0.0

    def template_catalogue(self) -> TemplateCatalogue:
        return self.catalogue or TemplateCatalogue.load(public_base_url=self.public_base_url)
