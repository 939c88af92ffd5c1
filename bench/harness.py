"""What the benchmarks share: a fresh database, the app served on loopback, percentiles."""

from __future__ import annotations

import math
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

STARTUP_TIMEOUT_SECONDS = 30.0


@contextmanager
def fresh_database(kind: str, pg_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """Yields (SQLAlchemy URL, description) of a fresh database: a temp SQLite file, or a new
    PostgreSQL database on the server of ``pg_url``; removes it afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix.replace('_', '-')}-") as folder:
            yield f"sqlite:///{Path(folder) / 'bridge.db'}", "sqlite (temp file, WAL)"
        return
    admin = make_url(pg_url)
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    engine = create_engine(admin.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SHOW server_version")).scalar()
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield (admin.set(database=name).render_as_string(hide_password=False),
                   f"postgresql {version} at {admin.host}:{admin.port} (fresh database {name}, dropped after)")
        finally:
            with engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@contextmanager
def serve(app: Any, *, lifespan: Literal["on", "off"] = "off", port: int = 0) -> Iterator[str]:
    """The app under uvicorn on a loopback port (``port``, or a free one), in a thread, with the
    settings of ``bridge serve`` (no access log, long keep-alive); yields its root URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None, access_log=False,
                                           lifespan=lifespan, timeout_keep_alive=75))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="bench-service")
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank, on values sorted ascending."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * q / 100) - 1))]
