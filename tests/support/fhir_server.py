"""The real FHIR R4 test server for tests: :class:`adapter.demo.sandbox_ehr.SandboxEhr` (one launcher
for the demo, the tests and the benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapter.demo.sandbox_ehr import NotifyMethod, SandboxEhr, free_port

RunningFhirServer = SandboxEhr
__all__ = ["RunningFhirServer", "free_port", "start_fhir_server"]


def start_fhir_server(tmp_dir: Path, *, notify_method: NotifyMethod = "put-resource", retries: int = 3,
                      server_auth: dict[str, Any] | None = None) -> SandboxEhr:
    """Starts sekmet-fhir under ``tmp_dir`` (simulator off) and waits until it answers."""
    return SandboxEhr(tmp_dir / "sekmet", notify_method=notify_method, retries=retries,
                      server_auth=server_auth).start()
