"""The image for real, with a container runtime (opt-in: BRIDGE_TEST_DOCKER=1; CI has no Docker): the
Dockerfile builds, the container answers /livez and /readyz, its HEALTHCHECK turns healthy, it runs as
the unprivileged uid, and `docker stop` (SIGTERM, then SIGKILL after the grace period: Docker Engine
reference, "docker container stop") ends it with exit status 0 well inside that grace period.

BRIDGE_TEST_PYTHON_IMAGE names the base image (the Dockerfile's PYTHON_IMAGE build argument; default
python:3.11-slim), e.g. a local stand-in or a mirror's copy where Docker Hub is out of reach."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRACE_SECONDS = 30  # compose.yaml's stop_grace_period
HEALTHY_WITHIN = 90.0  # the HEALTHCHECK's first probe runs one interval (15 s) after the start

pytestmark = pytest.mark.skipif(
    os.environ.get("BRIDGE_TEST_DOCKER") != "1" or shutil.which("docker") is None,
    reason="builds and runs the image: set BRIDGE_TEST_DOCKER=1 (needs a Docker daemon)",
)


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"docker {args[0]} failed: {result.stderr[-2000:]}"
    return result.stdout.strip()


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def poll(check: Callable[[], bool], what: str, within: float, container: str) -> None:
    """Calls check() until it returns True; fails after `within` seconds, with the container's last logs."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except (OSError, ValueError):  # not listening yet, or a half-written answer
            pass
        state = docker("inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", container)
        if time.monotonic() >= deadline or not state.startswith("running"):  # an exited one will not answer
            logs = subprocess.run(["docker", "logs", "--tail", "30", container], capture_output=True, text=True,
                                  check=False, timeout=30)
            pytest.fail(f"{what}: not within {within:.0f}s, or the container stopped ({state}):\n"
                        f"{logs.stdout}{logs.stderr}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    tag = f"fhir-whatsapp-bridge:test-{uuid.uuid4().hex[:8]}"
    base = os.environ.get("BRIDGE_TEST_PYTHON_IMAGE", "python:3.11-slim")
    # --network host: the build's pip reaches PyPI the way this machine does (proxy, resolver).
    docker("build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag, str(ROOT),
           timeout=1200)
    yield tag
    docker("rmi", tag)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    # Demo mode: the shipped placeholder secrets are accepted, SQLite in the image user's home; the EHR
    # is unreachable on purpose (readiness depends on the database only).
    name = f"bridge-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::8000", "-e", "BRIDGE_MODE=demo",
           "-e", "BRIDGE_FHIR_BASE_URL=http://127.0.0.1:9/fhir", image)
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=60)


def test_container_is_ready_healthy_unprivileged_and_stops_cleanly(container: str) -> None:
    host_port = docker("port", container, "8000/tcp").splitlines()[0].rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{host_port}"

    poll(lambda: get(f"{base}/readyz")[0] == 200, "/readyz 200", HEALTHY_WITHIN, container)
    status, body = get(f"{base}/readyz")
    assert status == 200 and body["status"] == "ready", body
    assert get(f"{base}/livez") == (200, {"status": "alive"})
    poll(lambda: docker("inspect", "-f", "{{.State.Health.Status}}", container) == "healthy",
         "the image's HEALTHCHECK healthy", HEALTHY_WITHIN, container)

    assert docker("exec", container, "id", "-u") == "10001"
    assert docker("inspect", "-f", "{{.Config.User}}", container).split(":")[0] not in ("", "0", "root")

    started = time.monotonic()
    docker("stop", "-t", str(GRACE_SECONDS), container, timeout=GRACE_SECONDS + 30)
    took = time.monotonic() - started
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container))
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state  # 137 would be the SIGKILL after grace
    assert took < GRACE_SECONDS, f"stop took {took:.1f}s"
