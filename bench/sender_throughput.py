"""Sender throughput against the Cloud API emulator, on loopback only.

    python bench/sender_throughput.py                      # 5000 messages, concurrency 64, both modes
    python bench/sender_throughput.py -n 20000 -c 128 --mode subprocess --transport httpx

``subprocess``: the emulator runs in its own process (its own core), as Meta would.
``thread``: the emulator runs in a thread of this process (own event loop, shared GIL), as in the tests.
Prints messages/s, p50/p99 latency, peak RSS and the machine. Stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine_info import machine
from whatsapp.emulator import EmulatorConfig, EmulatorServer, run_emulator
from whatsapp.errors import WhatsAppError
from whatsapp.sender import CloudApiSender
from whatsapp.transport import RequestNotSentError, ResponseLostError, Transport

TOKEN = "bench-token"
PHONE_NUMBER_ID = "100000000000001"


def config() -> EmulatorConfig:
    # No webhook URL: this measures the send path only.
    return EmulatorConfig(access_token=TOKEN, app_secret="bench-secret", webhook_url=None)


def payload(i: int) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": f"+1 201-555-01{i % 100:02d}",
        "type": "template",
        "biz_opaque_callback_data": f"outbox:{i}",
        "template": {"name": "appointment_confirmation", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Tuesday, December 1, 2026"},
                                            {"type": "text", "text": "10:30 AM"},
                                            {"type": "text", "text": "Main Campus"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0",
             "parameters": [{"type": "payload", "payload": f"confirm:{i}"}]},
        ]},
    }


class HttpxTransport:
    """For comparison only: httpx.AsyncClient behind the same Transport protocol."""

    def __init__(self, max_connections: int) -> None:
        import httpx

        self._httpx = httpx
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits)

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str],
                        timeout: float) -> tuple[int, bytes]:
        try:
            response = await self._client.post(url, content=body, headers=dict(headers), timeout=timeout)
        except (self._httpx.ConnectError, self._httpx.ConnectTimeout, self._httpx.PoolTimeout) as exc:
            raise RequestNotSentError(type(exc).__name__) from exc
        except self._httpx.HTTPError as exc:
            raise ResponseLostError(type(exc).__name__) from exc
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


async def drive(base_url: str, n: int, concurrency: int, transport_name: str) -> dict[str, Any]:
    transport: Transport | None = HttpxTransport(concurrency) if transport_name == "httpx" else None
    latencies: list[float] = []
    errors = 0
    async with CloudApiSender(base_url, "v23.0", PHONE_NUMBER_ID, TOKEN, timeout_seconds=30,
                              max_connections=concurrency, transport=transport) as sender:
        next_index = iter(range(n))

        async def worker() -> None:
            nonlocal errors
            for i in next_index:
                started = time.perf_counter()
                try:
                    await sender.send(payload(i))
                except WhatsAppError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        warm = iter(range(min(500, n)))
        await asyncio.gather(*(_warm(sender, warm) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    accepted = await asyncio.to_thread(_accepted, base_url)
    latencies.sort()
    return {
        "messages": n, "errors": errors, "emulator_accepted": accepted,
        "seconds": round(elapsed, 3), "msgs_per_s": round(n / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def _warm(sender: CloudApiSender, indexes: Any) -> None:
    for i in indexes:
        await sender.send(payload(i))


def _accepted(base_url: str) -> int:
    """What the emulator counted (warm-up included): a check that every send really reached it."""
    with urllib.request.urlopen(f"{base_url}/_emulator/health", timeout=5) as response:
        return int(json.loads(response.read())["accepted"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base_url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/_emulator/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("emulator did not become healthy")


def _run(coro: Any, loop: str) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)  # type: ignore[no-any-return]
    return asyncio.run(coro)  # type: ignore[no-any-return]


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    if mode == "thread":
        with EmulatorServer(config()) as emulator:
            result = _run(drive(emulator.base_url, args.n, args.c, args.transport), args.loop)
        return result
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url)
        result = _run(drive(base_url, args.n, args.c, args.transport), args.loop)
    finally:
        child.terminate()
        child.wait(10)
    result["emulator_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5000, help="messages to send (default 5000)")
    parser.add_argument("-c", type=int, default=64, help="concurrent sends = connections (default 64)")
    parser.add_argument("--mode", choices=["subprocess", "thread", "both"], default="both")
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the sender's event loop")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child process: run the emulator
    args = parser.parse_args()
    if args.serve:
        run_emulator(config(), "127.0.0.1", args.serve, log_level="warning")
        return
    print(json.dumps({"machine": machine(), "n": args.n, "concurrency": args.c, "transport": args.transport,
                      "sender_loop": args.loop}))
    for mode in (["subprocess", "thread"] if args.mode == "both" else [args.mode]):
        result = run_mode(mode, args)
        result["sender_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps({"mode": mode, **result}))


if __name__ == "__main__":
    main()
