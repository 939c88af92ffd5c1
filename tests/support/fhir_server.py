"""Runs a real FHIR R4 server (``sekmet-fhir`` from PyPI) in a subprocess on a loopback port.

The auto-booking simulator is always off (it would book ``proposed`` Appointments by itself),
the traffic log is off, and everything the server writes stays under ``tmp_dir``. Its log goes to
``tmp_dir/sekmet.log``; a failed start raises with the log's tail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import yaml

NotifyMethod = Literal["put-resource", "post-endpoint"]
STARTUP_TIMEOUT_SECONDS = 30.0


@dataclass
class RunningFhirServer:
    """A started sekmet server: ``base_url`` ends in ``/fhir``; ``root_url`` is its origin."""

    base_url: str
    root_url: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> RunningFhirServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_port() -> int:
    """A currently free loopback TCP port (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_fhir_server(
    tmp_dir: Path,
    *,
    notify_method: NotifyMethod = "put-resource",
    retries: int = 3,
    server_auth: dict[str, Any] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> RunningFhirServer:
    """Starts sekmet and waits until ``GET /fhir/metadata`` answers.

    ``retries`` is how many times sekmet tries each rest-hook delivery before it sets the
    Subscription to ``error`` (it sleeps 1 s, 2 s, 4 s... between tries). ``server_auth`` is
    sekmet's ``server_auth`` block, e.g. ``{"types": ["bearer"], "tokens": ["t"]}``.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _attempt in range(3):  # the free port can be taken between picking and binding it
        try:
            return _start_once(tmp_dir, notify_method, retries, server_auth, startup_timeout)
        except RuntimeError as exc:
            last_error = exc
    raise RuntimeError(f"sekmet did not start: {last_error}")


def _start_once(
    tmp_dir: Path, notify_method: NotifyMethod, retries: int, server_auth: dict[str, Any] | None,
    startup_timeout: float,
) -> RunningFhirServer:
    port = free_port()
    root_url = f"http://127.0.0.1:{port}"
    data_dir = tmp_dir / f"sekmet-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "base_url": f"{root_url}/fhir",
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "simulator": {"enabled": False},
        "subscriptions": {"notify_method": notify_method, "retries": retries},
        "log_inbound": False,
    }
    if server_auth is not None:
        config["server_auth"] = server_auth
    config_path = data_dir / "sekmet.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = data_dir / "sekmet.log"
    env = {**os.environ, "SEKMET_CONFIG": str(config_path)}
    command = [sys.executable, "-m", "uvicorn", "sekmet.main:app_factory", "--factory",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log_path.open("wb") as log:
        # cwd=data_dir: sekmet resolves some relative paths (keys/) against the working directory.
        process = subprocess.Popen(command, cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningFhirServer(f"{root_url}/fhir", root_url, port, data_dir, log_path, process)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {_tail(log_path)}")
        try:
            if httpx.get(f"{root_url}/fhir/metadata", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"no answer within {startup_timeout} s: {_tail(log_path)}")


def _tail(path: Path, limit: int = 2000) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return text[-limit:]
