"""MLLP framing: wraps HL7 v2 messages for TCP and finds them again in a byte stream.

Implements the Minimal Lower Layer Protocol, Release 2 (HL7 Version 3 Standard: Transport
Specification - MLLP, R2; also HL7 v2.5.1 Appendix C.4): a frame is ``<SB> message <EB><CR>`` with
SB = 0x0B and EB = 0x1C, CR = 0x0D. The message itself never contains SB or EB.

:class:`FrameDecoder` is incremental: bytes may arrive one at a time or many frames at once. It
reports what the stream did wrong as :class:`FrameError` values rather than raising, so a listener can
answer each problem (an ``AR`` for a truncated message) and carry on with the next frame:

- ``truncated``: a new SB arrived, or the stream ended, before the frame's EB;
- ``garbage``: bytes outside any frame (whitespace between frames is tolerated silently, as
  several engines send a trailing LF);
- ``oversize``: a frame grew past ``max_frame_bytes`` (its rest is skipped up to the next SB);
- ``empty``: ``<SB><EB><CR>`` with nothing inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
DEFAULT_MAX_FRAME_BYTES = 1 << 20  # 1 MiB: SIU/ORU without embedded documents are a few KB

FrameProblem = Literal["truncated", "garbage", "oversize", "empty"]


@dataclass(frozen=True)
class Frame:
    """One complete message's bytes, without the MLLP envelope."""

    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class FrameError:
    """A stream problem; ``partial`` holds what was received of a truncated frame (to read its MSH)."""

    problem: FrameProblem
    size: int
    partial: bytes = field(default=b"", repr=False)


def frame(message: bytes | str) -> bytes:
    """``message`` in its MLLP envelope (text is sent as UTF-8)."""
    payload = message.encode("utf-8") if isinstance(message, str) else message
    if START_BLOCK in payload or END_BLOCK in payload:
        raise ValueError("an HL7 message cannot contain the MLLP block characters 0x0B or 0x1C")
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class FrameDecoder:
    """Feeds on received bytes, yields complete frames and stream problems in arrival order."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._skipping = False  # after an oversize frame, until the next SB
        self._skipped = 0
        self._after_end = False  # an EB was just seen: a CR next belongs to the envelope

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held now."""
        return len(self._buffer) if self._in_frame else 0

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        self._buffer += data
        while self._buffer:
            if self._after_end:
                self._after_end = False
                if self._buffer[:1] == CARRIAGE_RETURN:
                    del self._buffer[:1]
                continue
            if not self._in_frame:
                if not self._outside(out):
                    break
                continue
            if not self._inside(out):
                break
        return out

    def close(self) -> list[FrameError]:
        """The stream ended: an unfinished frame is truncated, leftover bytes are garbage."""
        out: list[FrameError] = []
        if self._in_frame:
            out.append(FrameError("truncated", len(self._buffer), bytes(self._buffer)))
        elif self._skipping:
            out.append(FrameError("oversize", self._skipped))
        elif self._buffer.strip():
            out.append(FrameError("garbage", len(self._buffer)))
        self._buffer.clear()
        self._in_frame = self._skipping = False
        return out

    def _outside(self, out: list[Frame | FrameError]) -> bool:
        """Between frames: find the next SB. Returns whether to keep going with the buffer."""
        start = self._buffer.find(START_BLOCK)
        before = self._buffer if start < 0 else self._buffer[:start]
        if self._skipping:
            self._skipped += len(before)
            if start >= 0:
                out.append(FrameError("oversize", self._skipped))
                self._skipping, self._skipped = False, 0
        elif before.strip():
            out.append(FrameError("garbage", len(before)))
        if start < 0:
            self._buffer.clear()
            return False
        del self._buffer[: start + 1]
        self._in_frame = True
        return True

    def _inside(self, out: list[Frame | FrameError]) -> bool:
        """Inside a frame: find its EB (or an SB that cuts it short). Returns whether to keep going."""
        end = self._buffer.find(END_BLOCK)
        restart = self._buffer.find(START_BLOCK)
        if restart >= 0 and (end < 0 or restart < end):
            out.append(FrameError("truncated", restart, bytes(self._buffer[:restart])))
            del self._buffer[: restart + 1]
            return True
        if end < 0:
            if len(self._buffer) > self._max:
                self._skipping, self._skipped, self._in_frame = True, len(self._buffer), False
                self._buffer.clear()
            return False
        if end > self._max:
            out.append(FrameError("oversize", end))
        elif end == 0:
            out.append(FrameError("empty", 0))
        else:
            out.append(Frame(bytes(self._buffer[:end])))
        del self._buffer[: end + 1]
        self._in_frame = False
        self._after_end = True
        return True
