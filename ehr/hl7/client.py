"""Sends HL7 v2 messages over MLLP and waits for each one's ACK, with timeouts.

Transport per MLLP Release 2 (:mod:`ehr.hl7.mllp`); the ACK is read per HL7 v2.5.1 2.15.8 (MSA-1
code, MSA-2 the control id it answers, MSA-3 text) and 2.15.5 (ERR-3 code, ERR-8 user message).
Used by ``bridge hl7 send FILE`` and for outbound messages (SRM^S03/S04 to a scheduling system).
One :class:`MllpClient` keeps one connection and sends one message at a time, as MLLP requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass, field
from types import TracebackType

from ehr.hl7.ack import read_header
from ehr.hl7.mllp import Frame, FrameDecoder, frame


class MllpClientError(Exception):
    """Sending failed; whether the receiver stored the message is unknown unless the class says."""


class MllpConnectError(MllpClientError):
    """No connection could be made (refused, unreachable, TLS handshake failed, timed out)."""


class MllpTimeoutError(MllpClientError):
    """No ACK within the timeout: resend later (the receiver deduplicates on MSH-10)."""


class MllpProtocolError(MllpClientError):
    """The receiver answered with something that is not an ACK to this message, or hung up."""


@dataclass(frozen=True)
class Ack:
    """A received acknowledgement."""

    code: str  # MSA-1: AA/AE/AR (or CA/CE/CR in enhanced mode)
    control_id: str  # MSA-2: the MSH-10 it answers
    text: str  # MSA-3
    error_code: str  # ERR-3.1 (HL7 table 0357), '' without ERR
    error_message: str  # ERR-8
    raw: str = field(repr=False)

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


def parse_ack(raw: bytes | str) -> Ack:
    """Reads MSA and ERR by hand (an ACK is small and its shape fixed; the full parser is not needed)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    header = read_header(text)
    if not text.startswith("MSH"):
        raise MllpProtocolError("the answer is not an HL7 message")
    sep, component = header.field_sep, header.encoding[0]
    segments = {s.split(sep)[0]: s.split(sep) for s in text.replace("\n", "\r").split("\r") if s}
    msa = segments.get("MSA")
    if msa is None or len(msa) < 3:
        raise MllpProtocolError("the answer has no MSA segment")
    err = segments.get("ERR", [])

    def at(fields: list[str], n: int) -> str:
        return fields[n] if len(fields) > n else ""

    return Ack(code=msa[1], control_id=msa[2], text=at(msa, 3), error_code=at(err, 3).split(component)[0],
               error_message=at(err, 8), raw=text)


class MllpClient:
    """One MLLP connection to ``host:port``; ``async with MllpClient(...) as client: await client.send(msg)``."""

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, connect_timeout: float = 10.0, ack_timeout: float = 30.0) -> None:
        self._host, self._port = host, port
        self._ssl, self._server_hostname = ssl_context, server_hostname
        self._connect_timeout, self._ack_timeout = connect_timeout, ack_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder()
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=self._ssl,
                                        server_hostname=self._server_hostname if self._ssl else None),
                self._connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise MllpConnectError(f"cannot connect to {self._host}:{self._port}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def send(self, message: bytes | str) -> Ack:
        """Sends ``message`` and returns its ACK; raises :class:`MllpClientError` subclasses.

        After a timeout or protocol error the connection is closed (a late ACK would otherwise be
        read as the answer to the next message); the next :meth:`send` reconnects.
        """
        payload = message.encode("utf-8") if isinstance(message, str) else message
        payload = payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip()
        expected = read_header(payload).control_id
        async with self._lock:
            if self._writer is None:
                await self.connect()
            try:
                return await asyncio.wait_for(self._exchange(payload, expected), self._ack_timeout)
            except TimeoutError as exc:
                await self.close()
                raise MllpTimeoutError(f"no ACK within {self._ack_timeout:g}s for control id {expected!r}") from exc
            except (MllpProtocolError, ConnectionError) as exc:
                await self.close()
                if isinstance(exc, MllpProtocolError):
                    raise
                raise MllpProtocolError(f"connection lost before the ACK: {type(exc).__name__}") from exc

    async def _exchange(self, payload: bytes, expected: str) -> Ack:
        assert self._reader is not None and self._writer is not None
        self._writer.write(frame(payload))
        await self._writer.drain()
        while True:
            data = await self._reader.read(65536)
            events = self._decoder.feed(data) if data else self._decoder.close()
            for event in events:
                if isinstance(event, Frame):
                    ack = parse_ack(event.payload)
                    if expected and ack.control_id != expected:
                        raise MllpProtocolError("the ACK answers another control id")
                    return ack
            if not data:
                raise MllpProtocolError("the receiver closed the connection without an ACK")


def split_messages(text: str) -> list[str]:
    """The messages of a file: each MSH starts one (blank lines and any terminator style allowed)."""
    messages: list[list[str]] = []
    for line in re.split(r"\r\n|\n|\r", text):
        if line.startswith("MSH"):
            messages.append([])
        if line.strip() and messages:
            messages[-1].append(line)
    return ["\r".join(segments) + "\r" for segments in messages]


async def send_message(message: bytes | str, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                       server_hostname: str | None = None, timeout_seconds: float = 30.0) -> Ack:
    """Sends one message on a new connection and returns its ACK."""
    async with MllpClient(host, port, ssl_context=ssl_context, server_hostname=server_hostname,
                          connect_timeout=timeout_seconds, ack_timeout=timeout_seconds) as client:
        return await client.send(message)
