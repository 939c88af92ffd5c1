"""An asyncio MLLP server: each framed message is parsed, stored through a port, then acknowledged.

Transport per MLLP Release 2 (:mod:`ehr.hl7.mllp`), optionally inside TLS (an ``ssl.SSLContext``,
as the IHE ITI TF-2 "Secure Node" profile runs MLLP). Acknowledgement per HL7 v2.5.1 2.9.2
(original mode, :mod:`ehr.hl7.ack`):

- ``AA`` after :meth:`ehr.hl7.ports.MessageStore.store` returned ``STORED`` or ``DUPLICATE``;
- ``AE`` when the store returned ``FAILED``, raised or timed out (the engine resends);
- ``AR`` with an ERR segment for a message that cannot be accepted as sent (unparseable, a
  truncated or oversize frame, a required segment or field missing); nothing is stored.

Messages on one connection are handled one at a time, in order, as MLLP senders wait for each
ACK. Log lines carry the facility, MSH-10 and the outcome: never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from ehr.hl7.ack import AckCode, AckError, build_ack, read_header
from ehr.hl7.config import Hl7Config
from ehr.hl7.errors import APPLICATION_INTERNAL_ERROR, SEGMENT_SEQUENCE_ERROR, Hl7MessageError
from ehr.hl7.messages import parse_message
from ehr.hl7.mllp import DEFAULT_MAX_FRAME_BYTES, Frame, FrameDecoder, FrameError, frame
from ehr.hl7.ports import MessageStore, StoreResult

log = logging.getLogger(__name__)

_FRAME_REASONS = {
    "truncated": "the MLLP frame ended before its end block (0x1C 0x0D)",
    "oversize": "the MLLP frame is larger than this listener accepts",
    "empty": "the MLLP frame is empty",
}
_STORE_FAILED = AckError(APPLICATION_INTERNAL_ERROR, "the message could not be stored now; resend it")


class MllpListener:
    """Serves MLLP on ``host:port`` (port 0 picks a free one; read :attr:`port` after :meth:`start`).

    ``store_timeout`` bounds one store call (past it: ``AE``); ``idle_timeout`` closes a connection
    that sent nothing for that long (``None``, the default: never, as engines keep MLLP connections
    open for days); frames over ``max_frame_bytes`` get ``AR``.
    """

    def __init__(self, store: MessageStore, config: Hl7Config, *, host: str = "127.0.0.1", port: int = 2575,
                 ssl_context: ssl.SSLContext | None = None, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 store_timeout: float = 30.0, idle_timeout: float | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._config = config
        self._host, self._port = host, port
        self._ssl = ssl_context
        self._max_frame = max_frame_bytes
        self._store_timeout = store_timeout
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, ssl=self._ssl)
        log.info("HL7 MLLP listener on %s:%s (tls=%s)", self._host, self.port, self._ssl is not None)

    async def close(self) -> None:
        """Stops accepting, then ends open connections (a message being stored finishes first)."""
        if self._server is None:
            return
        self._server.close()
        # Closing each transport ends its read loop with EOF; cancelling the handler tasks instead makes
        # asyncio log their CancelledError from the stream protocol's callback.
        for writer in list(self._connections.values()):
            writer.close()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._store_timeout + 1)
            for task in late:
                task.cancel()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        decoder = FrameDecoder(self._max_frame)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self._idle_timeout)
                except (TimeoutError, ConnectionError):
                    break
                events: list[Frame | FrameError] = [*decoder.feed(data)] if data else [*decoder.close()]
                for event in events:
                    answer = await self.answer(event)
                    if answer is not None:
                        writer.write(frame(answer))
                        await writer.drain()
                if not data:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away; an unacknowledged message is resent by its engine
        finally:
            if task is not None:
                self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, event: Frame | FrameError) -> str | None:
        """The ACK for one decoded frame or stream problem; ``None`` when there is no one to answer."""
        now = self._clock()
        if isinstance(event, FrameError):
            if event.problem == "garbage":
                log.warning("HL7 MLLP: %d bytes outside any frame ignored", event.size)
                return None
            header = read_header(event.partial)
            log.warning("HL7 MLLP: %s frame (%d bytes) rejected, control id %r", event.problem, event.size,
                        header.control_id)
            return build_ack(header, "AR", error=AckError(SEGMENT_SEQUENCE_ERROR, _FRAME_REASONS[event.problem]),
                             now=now)
        header = read_header(event.payload)
        try:
            parsed = parse_message(event.payload, self._config)
        except Hl7MessageError as exc:
            log.warning("HL7 message %r rejected: %s", header.control_id, exc)
            return build_ack(header, "AR", error=AckError(exc.code, exc.reason, exc.location), now=now)
        except Exception:
            # A parser fault is ours, not the sender's: AE keeps the message coming back once fixed.
            log.exception("HL7 message %r: parsing failed unexpectedly", header.control_id)
            return build_ack(header, "AE", error=_STORE_FAILED, now=now)
        code: AckCode = "AE"
        text = None
        try:
            result = await asyncio.wait_for(self._store.store(parsed), self._store_timeout)
        except Exception as exc:  # any store fault means "not committed": the sender must resend
            log.warning("HL7 message %r from %r not stored: %s", parsed.control_id, parsed.facility,
                        type(exc).__name__)
        else:
            if result in (StoreResult.STORED, StoreResult.DUPLICATE):
                code = "AA"
                text = "duplicate: already received" if result is StoreResult.DUPLICATE else None
            log.info("HL7 %s^%s %r from %r: %s", parsed.message_type, parsed.trigger, parsed.control_id,
                     parsed.facility, result.value)
        if code == "AE":
            return build_ack(header, "AE", error=_STORE_FAILED, now=now)
        return build_ack(header, "AA", text=text, now=now)
