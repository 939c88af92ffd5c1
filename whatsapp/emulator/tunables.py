"""The emulator's run-time settings: ``GET``/``PATCH /_emulator/config``.

They start from :class:`~whatsapp.emulator.config.EmulatorConfig` (which stays frozen) and can be changed
while the emulator runs, e.g. to switch on the pair-rate limit in the middle of a test. A PATCH body is a
JSON object with any of the keys of :data:`FIELDS` (``status_delays`` takes a partial
``{"sent", "delivered", "read"}`` object); an unknown key or a value of the wrong type or range is refused
as a whole (HTTP 422), nothing half-applied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from whatsapp.emulator.config import EmulatorConfig, StatusDelays

# key → (kind, nullable, minimum): kinds are "bool", "int" and "number" (int or float).
FIELDS: dict[str, tuple[str, bool, float | None]] = {
    "throughput_limit_per_second": ("number", True, 1e-9),
    "pair_rate_limit_per_6s": ("number", True, 1e-9),
    "pair_rate_burst": ("int", True, 1),
    "rate_limit_tolerance_seconds": ("number", False, 0),
    "status_webhooks": ("bool", False, None),
    "out_of_order_statuses": ("bool", False, None),
    "skip_delivered": ("bool", False, None),
    "duplicate_webhooks": ("int", False, 0),
    "duplicate_delay_seconds": ("number", False, 0),
    "batch_statuses": ("int", False, 1),
    "batch_window_seconds": ("number", False, 0),
    "enforce_service_window": ("bool", False, None),
    "service_window_seconds": ("number", False, 1e-9),
    "time_scale": ("number", False, 1e-9),
    "bsuid_enabled": ("bool", False, None),
    "template_review_seconds": ("number", False, 0),
}
_STATUS_STEPS = ("sent", "delivered", "read")


class TunablesError(ValueError):
    """A PATCH that cannot be applied (unknown key, wrong type, out of range)."""


@dataclass
class Tunables:
    """Mutable; read by the send route and the webhook dispatcher on every use."""

    throughput_limit_per_second: float | None
    pair_rate_limit_per_6s: float | None
    pair_rate_burst: int | None
    rate_limit_tolerance_seconds: float
    status_webhooks: bool
    status_delays: StatusDelays
    out_of_order_statuses: bool
    skip_delivered: bool
    duplicate_webhooks: int
    duplicate_delay_seconds: float
    batch_statuses: int
    batch_window_seconds: float
    enforce_service_window: bool
    service_window_seconds: float
    time_scale: float
    bsuid_enabled: bool
    template_review_seconds: float

    @classmethod
    def from_config(cls, config: EmulatorConfig) -> Tunables:
        values = {f.name: getattr(config, f.name) for f in fields(cls)}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, patch: Any) -> None:
        """Validates all of ``patch`` first, then applies it."""
        if not isinstance(patch, dict):
            raise TunablesError("expected a JSON object of settings")
        unknown = sorted(set(patch) - set(FIELDS) - {"status_delays"})
        if unknown:
            raise TunablesError(f"unknown settings: {', '.join(unknown)}; known: "
                                f"{', '.join(sorted([*FIELDS, 'status_delays']))}")
        changes = {key: _checked(key, value, *FIELDS[key]) for key, value in patch.items() if key != "status_delays"}
        if "status_delays" in patch:
            changes["status_delays"] = _status_delays(self.status_delays, patch["status_delays"])
        for key, value in changes.items():
            setattr(self, key, value)


def _checked(key: str, value: Any, kind: str, nullable: bool, minimum: float | None) -> Any:
    if value is None:
        if nullable:
            return None
        raise TunablesError(f"{key} cannot be null")
    if kind == "bool":
        if not isinstance(value, bool):
            raise TunablesError(f"{key} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind == "int" and not isinstance(value, int)):
        raise TunablesError(f"{key} must be {'an integer' if kind == 'int' else 'a number'}")
    if minimum is not None and value < minimum:
        raise TunablesError(f"{key} must be positive" if 0 < minimum < 1 else f"{key} must be at least {minimum:g}")
    return value


def _status_delays(current: StatusDelays, raw: Any) -> StatusDelays:
    if not isinstance(raw, dict) or set(raw) - set(_STATUS_STEPS):
        raise TunablesError("status_delays must be an object with sent, delivered and/or read")
    values = {step: _checked(f"status_delays.{step}", raw[step], "number", True, 0) for step in raw}
    return replace(current, **values)
