"""The HTTP transport under :class:`whatsapp.sender.CloudApiSender`, injectable like httpx's.

A transport does one thing: POST bytes and return ``(status, body bytes)``. It reports failures as two
exceptions, because the Cloud API has no idempotency key and the caller must know which side of the
wire a failure happened on:

* :class:`RequestNotSentError`: the request never left (connection refused, DNS, connect timeout, TLS
  handshake). Resending cannot duplicate a message.
* :class:`ResponseLostError`: the request was (or may have been) written, but no complete response came
  back (read timeout, server disconnect, reset). Meta may have accepted the message.

The default, :class:`AiohttpTransport`, was chosen by measurement on the 2-core target machine
(aiohttp ≈ 2,400 to 2,700 req/s against a bare local server; httpx ≈ 190 to 340 req/s; see
``bench/sender_throughput.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import aiohttp


class TransportError(Exception):
    """Base of transport failures; never carries the request body."""


class RequestNotSentError(TransportError):
    """The request did not leave this process: safe to resend."""


class ResponseLostError(TransportError):
    """The request may have reached the server, but its response did not come back."""


class Transport(Protocol):
    """What the sender needs from HTTP."""

    async def post_json(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float  # noqa: ASYNC109
    ) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """aiohttp ``ClientSession`` with a bounded, keep-alive connection pool.

    The session is created lazily, inside the running event loop, as aiohttp requires.
    ``keepalive_seconds`` should stay below the server's own idle timeout, so that a pooled connection
    is not closed by the server just as a request is written to it (that race looks like a lost response).
    """

    def __init__(self, max_connections: int = 64, keepalive_seconds: float = 15.0) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections,
                keepalive_timeout=self._keepalive_seconds,
            )
            # No cookies, no automatic JSON: the body is serialised once by the sender.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True
            )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            # ``connect`` covers waiting for a pooled connection plus connecting: a timeout there is
            # raised as ConnectionTimeoutError, which proves the request never left. ``total`` is only a
            # backstop against a trickling server, set above ``connect`` so it never masks that proof.
            timeout = aiohttp.ClientTimeout(total=2 * seconds, connect=seconds, sock_read=seconds)
            self._timeouts[seconds] = timeout
        return timeout

    async def post_json(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        session = self._ensure_session()
        try:
            async with session.post(url, data=body, headers=headers, timeout=self._timeout(timeout)) as resp:
                return resp.status, await resp.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise RequestNotSentError("connect timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise RequestNotSentError("could not connect") from exc
        except aiohttp.InvalidURL as exc:
            raise RequestNotSentError("invalid URL") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Read timeout, ServerDisconnectedError, reset while reading, truncated payload: the bytes
            # may have been processed by the server.
            raise ResponseLostError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
