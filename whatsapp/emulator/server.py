"""Running the emulator: in a background thread for tests and demos, or blocking for a CLI."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from whatsapp.emulator.app import create_emulator_app
from whatsapp.emulator.config import EmulatorConfig

# Longer than a client's keep-alive (aiohttp: 15 s), so the client always closes idle connections
# first; otherwise a request can race the server's close and look like a lost response.
KEEP_ALIVE_SECONDS = 75


def _uvicorn_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_SECONDS, backlog=4096,
    )


def _serve_in_thread(server: uvicorn.Server, sock: socket.socket) -> None:
    # uvloop when available, as uvicorn itself would pick (uvicorn[standard] ships it).
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.serve(sockets=[sock]))


class EmulatorServer:
    """Serves the emulator on ``host`` (loopback by default) in a daemon thread with its own event loop.

    ``port=0`` picks a free port; ``base_url`` tells where it is once entered::

        with EmulatorServer(config) as emulator:
            sender = CloudApiSender(emulator.base_url, "v23.0", ...)
    """

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.config = config
        self.app = create_emulator_app(config)
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the emulator has not been started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        # Bind first, so the port is known (and taken) before the thread starts.
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])
        self._server = uvicorn.Server(_uvicorn_config(self.app, self._host, self.port, self._log_level))
        # uvicorn installs signal handlers only in the main thread; this one stops through should_exit.
        server = self._server
        self._thread = threading.Thread(
            target=_serve_in_thread, args=(server, sock), name="whatsapp-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            self.stop()
            raise RuntimeError("the emulator did not start")

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._thread = None
        self._server = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_emulator(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8081,
                 log_level: str = "info") -> None:
    """Serves the emulator until interrupted (Ctrl-C); for the ``bridge`` CLI."""
    uvicorn.Server(_uvicorn_config(create_emulator_app(config), host, port, log_level)).run()
