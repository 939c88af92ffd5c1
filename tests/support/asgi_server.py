"""Serves an ASGI app with a real uvicorn server on a loopback port, in a background thread.

For integration tests where another process (the FHIR server) must reach our endpoints over HTTP.
The socket is bound before the server starts, so there is no window in which the port is free.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

STARTUP_TIMEOUT_SECONDS = 10.0


@contextmanager
def serve_in_thread(app: Any, *, lifespan: str = "off", **options: Any) -> Iterator[str]:
    """Yields the server's root URL (``http://127.0.0.1:PORT``); stops it on exit. ``options`` go to
    ``uvicorn.Config`` (e.g. ``access_log=True, log_config=None`` to see uvicorn's own log lines)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", "lifespan": lifespan, **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"asgi-{port}")
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("the test ASGI server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
