"""What the side-by-side benchmarks share: the anchors folder, servers as subprocesses, CPU, rounds.

The anchors (``../shared/bench-anchors`` beside the repository by default) are minimal programs
doing the same job as a part of the service; a ratio service/anchor from one run on one machine
says what our features and design cost (absolute figures from different runs do not compare).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.pipeline_throughput import cpu_seconds

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ANCHORS = REPO.parent / "shared" / "bench-anchors"
ANCHOR_FILES = ("webhook_bare.py", "webhook_pywa.py", "pipeline_bare.py")


def anchors_dir(path: Path) -> Path:
    """The anchors folder, or a clear exit when it is not there."""
    missing = [name for name in ANCHOR_FILES if not (path / name).is_file()]
    if missing:
        raise SystemExit(f"the benchmark anchors are not in {path} (missing {', '.join(missing)}); "
                         "pass --anchors /path/to/bench-anchors")
    return path.resolve()


__all__ = ["DEFAULT_ANCHORS", "Server", "anchors_dir", "cpu_seconds", "print_rounds", "spread"]


@dataclass
class Server:
    """One server under test, started as a subprocess with its output in ``log``."""

    name: str
    argv: list[str]
    url: str
    ready_path: str = "/"
    env: dict[str, str] | None = None
    cwd: Path | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> Server:
        assert self.log is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    if client.get(self.url + self.ready_path).status_code < 500:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.tail()}")

    def alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode} during the run:\n{self.tail()}")

    def tail(self, limit: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-limit:] if self.log and self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def spread(values: list[float], digits: int = 2) -> str:
    """min / median / max."""
    if not values:
        return "-"
    return " / ".join(f"{value:.{digits}f}" for value in (min(values), statistics.median(values), max(values)))


def ratios(rounds: list[dict[str, dict[str, Any]]], metric: str, numerator: str, denominator: str) -> list[float]:
    """numerator/denominator of ``metric`` in each round where both ran."""
    return [r[numerator][metric] / r[denominator][metric] for r in rounds
            if numerator in r and denominator in r and r[denominator][metric]]


def print_rounds(rounds: list[dict[str, dict[str, Any]]], columns: list[tuple[str, str]],
                 pairs: list[tuple[str, str, str]], fmt: Callable[[Any], str] = str) -> None:
    """Per round, per target the ``columns`` (key, title); then the ratios ``pairs`` (metric, a, b)
    as min / median / max over rounds."""
    names = list(dict.fromkeys(name for r in rounds for name in r))
    width = max(len(name) for name in names)
    print(f"  {'round':<5}  {'target':<{width}}  " + "  ".join(f"{title:>12}" for _, title in columns))
    for number, r in enumerate(rounds, 1):
        for name in names:
            if name in r:
                print(f"  {number:<5}  {name:<{width}}  "
                      + "  ".join(f"{fmt(r[name].get(key)):>12}" for key, _ in columns))
    print("  ratios over rounds (min / median / max):")
    for metric, a, b in pairs:
        print(f"    {metric} {a} / {b}: {spread(ratios(rounds, metric, a, b), 3)}")
