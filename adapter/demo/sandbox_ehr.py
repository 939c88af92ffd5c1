"""A sandbox EHR for the demo, the tests and the benchmarks: the real ``sekmet-fhir`` FHIR R4
server from PyPI, started as a subprocess on a free loopback port.

Its auto-booking simulator is always off (it would book ``proposed`` Appointments by itself) and
so is its traffic log; everything it writes stays under ``data_dir``, its output goes to
``data_dir/sekmet.log``, and a failed start raises with the log's tail. Stopped and started again
on the same folder and port, it keeps its data (an EHR outage, as tests need).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import yaml

NotifyMethod = Literal["put-resource", "post-endpoint"]
STARTUP_TIMEOUT_SECONDS = 30.0


class SandboxEhrError(RuntimeError):
    """The sandbox EHR could not be started (is the ``sekmet-fhir`` package installed?)."""


def free_port() -> int:
    """A currently free loopback TCP port (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SandboxEhr:
    """A sekmet-fhir server: ``base_url`` ends in ``/fhir``; ``root_url`` is its origin.

    ``retries`` is how many times sekmet tries each rest-hook delivery before it sets the
    Subscription to ``error``; ``server_auth`` is sekmet's ``server_auth`` block, e.g.
    ``{"types": ["bearer"], "tokens": ["t"]}``.
    """

    def __init__(self, data_dir: Path, *, notify_method: NotifyMethod = "put-resource", retries: int = 3,
                 server_auth: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.notify_method = notify_method
        self.retries = retries
        self.server_auth = server_auth
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/fhir"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "sekmet.log"

    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> SandboxEhr:
        """Starts (or restarts, on the same port and data) and waits for ``/fhir/metadata``."""
        if self.running:
            raise SandboxEhrError("already running; stop() it first")
        last_error: SandboxEhrError | None = None
        for _attempt in range(3):  # a free port can be taken between picking and binding it
            if not self.port or last_error is not None:
                self.port = free_port()
            try:
                return self._start_once(timeout)
            except SandboxEhrError as error:
                last_error = error
        raise SandboxEhrError(f"sekmet-fhir did not start: {last_error}")

    def _start_once(self, timeout: float) -> SandboxEhr:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "base_url": self.base_url, "host": "127.0.0.1", "port": self.port, "data_dir": str(self.data_dir),
            "simulator": {"enabled": False}, "log_inbound": False,
            "subscriptions": {"notify_method": self.notify_method, "retries": self.retries},
        }
        if self.server_auth is not None:
            config["server_auth"] = self.server_auth
        config_file = self.data_dir / "sekmet.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        command = [sys.executable, "-m", "uvicorn", "sekmet.main:app_factory", "--factory",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        with self.log_path.open("ab") as log:
            # cwd: sekmet resolves some relative paths (keys/) against the working directory.
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
                command, env={**os.environ, "SEKMET_CONFIG": str(config_file)}, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SandboxEhrError(f"exited with {self._process.returncode}: {self._tail()}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SandboxEhrError(f"no answer within {timeout:.0f} s: {self._tail()}")

    def _tail(self, limit: int = 2000) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return text[-limit:]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> SandboxEhr:
        return self if self.running else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
