"""A TCP proxy on loopback that a test can take down, as a database server restart looks to its
clients: every open connection is cut and new ones are refused until it is back.

The PostgreSQL server is shared by everything on the machine, so a fault test restarts this proxy
in front of it instead of the server itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy.engine import make_url

from adapter.demo.sandbox_ehr import free_port
from bench.harness import fresh_database


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; :meth:`outage` cuts it for a while."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def down(self) -> None:
        """Refuses new connections and cuts the open ones (a server going away)."""
        self._call(self._close())

    def up(self) -> None:
        self._call(self._listen())

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@contextmanager
def proxied(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@contextmanager
def fresh_database_behind_proxy(postgres_url: str, prefix: str) -> Iterator[tuple[str, str, TcpProxy]]:
    """A fresh PostgreSQL database on the server of ``postgres_url`` and a proxy in front of it: yields
    (its URL, its URL through the proxy, the proxy); drops the database afterwards."""
    with fresh_database("postgresql", postgres_url, prefix) as (database_url, _):
        url = make_url(database_url)
        with proxied(url.host or "127.0.0.1", url.port or 5432) as proxy:
            through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            yield database_url, through, proxy
