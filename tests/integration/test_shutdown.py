"""Clean shutdown: SIGTERM to ``bridge demo`` leaves none of its processes behind (the sandbox EHR
is a child process) and exits 128 + 15 when it came before the report; SIGTERM to ``bridge serve``
is a clean stop (exit 0) after the lifespan has let the pipeline finish what it was doing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from adapter.demo.sandbox_ehr import free_port

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def _children() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                by_parent.setdefault(int(stat[1]), []).append(int(entry.name))
    return by_parent


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, …, starttime at index 19."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below ``pid``; the start time tells a reused pid apart."""
    by_parent, found, todo = _children(), set(), [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            stat = _stat(child)
            if stat is not None:
                found.add((child, stat[19]))
                todo.append(child)
    return found


def alive(process: tuple[int, str]) -> bool:
    stat = _stat(process[0])
    return stat is not None and stat[19] == process[1] and stat[0] != "Z"


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


def read_lines(process: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_until(check, timeout: float, what: str, process: subprocess.Popen[str], lines: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{what}: exit {process.poll()}; output:\n{''.join(lines)[-3000:]}")
        time.sleep(0.1)


@pytest.mark.fhir
def test_sigterm_to_demo_leaves_no_process_behind(tmp_path: Path) -> None:
    demo = subprocess.Popen([BRIDGE, "demo", "--workdir", str(tmp_path)], env=clean_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = read_lines(demo)
    # Mid-run (the EHR, the emulator and the service are up; seeding begins): the hardest moment, and
    # the same unwinding as after the report, when the demo waits for Ctrl-C.
    wait_until(lambda: any("subscriptions are active" in line for line in lines), 120, "the demo's stack", demo,
               lines)
    spawned = descendants(demo.pid)
    assert spawned, "the demo should have started the sandbox EHR as a child process"

    demo.send_signal(signal.SIGTERM)

    assert demo.wait(timeout=60) == 128 + signal.SIGTERM  # stopped before its report
    assert [pid for pid, started in spawned if alive((pid, started))] == []


def test_sigterm_to_serve_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    serve = subprocess.Popen([BRIDGE, "serve"], text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=clean_env(BRIDGE_MODE="demo", BRIDGE_HTTP_PORT=str(port),
                                           BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.db'}",
                                           BRIDGE_MANAGE_SUBSCRIPTIONS="false", BRIDGE_RECONCILE_INTERVAL_SECONDS="0",
                                           BRIDGE_FHIR_BASE_URL=f"http://127.0.0.1:{free_port()}/fhir"))
    lines = read_lines(serve)

    def answering() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answering, 60, "the service's health endpoint", serve, lines)

    serve.send_signal(signal.SIGTERM)

    assert serve.wait(timeout=60) == 0, "".join(lines)[-3000:]
