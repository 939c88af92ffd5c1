"""A sandbox EHR for the demo and the tests: the real ``sekmet-fhir`` FHIR R4 server from PyPI,
started as a subprocess on a free loopback port with its auto-booking simulator off (otherwise it
books ``proposed`` appointments by itself).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
import yaml


class SandboxEhrError(RuntimeError):
    """The sandbox EHR could not be started (is the ``sekmet-fhir`` package installed?)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SandboxEhr:
    """A running sekmet-fhir server; ``base_url`` ends in ``/fhir``."""

    def __init__(self, data_dir: Path, *, port: int | None = None, notify_method: str = "put-resource") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.notify_method = notify_method
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> SandboxEhr:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "base_url": self.base_url, "host": "127.0.0.1", "port": self.port,
            "data_dir": str(self.data_dir), "simulator": {"enabled": False},
            "subscriptions": {"notify_method": self.notify_method, "retries": 3},
            "log_inbound": False,
        }
        config_file = self.data_dir / "sekmet.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = (self.data_dir / "sekmet.log").open("wb")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
                [sys.executable, "-m", "uvicorn", "sekmet.main:app_factory", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                env={**os.environ, "SEKMET_CONFIG": str(config_file)}, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SandboxEhrError(f"sekmet-fhir exited at start-up; see {self.data_dir / 'sekmet.log'}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SandboxEhrError(f"sekmet-fhir did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> SandboxEhr:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
