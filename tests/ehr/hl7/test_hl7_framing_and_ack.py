"""MLLP framing (incremental decoding, stream problems) and the ACKs built for each outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest

from ehr.hl7.ack import AckError, build_ack, read_header
from ehr.hl7.client import parse_ack, split_messages
from ehr.hl7.mllp import Frame, FrameDecoder, FrameError, frame
from tests.ehr.hl7.conftest import siu

MSG = siu().encode()


def test_one_byte_at_a_time_yields_each_frame_once() -> None:
    decoder = FrameDecoder()
    stream = frame(MSG) + b"\n" + frame(b"MSH|^~\\&|second")
    events = [event for byte in stream for event in decoder.feed(bytes([byte]))]
    assert events == [Frame(MSG), Frame(b"MSH|^~\\&|second")]
    assert decoder.close() == []


def test_many_frames_in_one_read() -> None:
    events = FrameDecoder().feed(frame(b"MSH|a") + frame(b"MSH|b") + frame(b"MSH|c"))
    assert [e.payload for e in events if isinstance(e, Frame)] == [b"MSH|a", b"MSH|b", b"MSH|c"]


def test_a_start_block_before_the_end_block_truncates_the_frame() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(b"\x0bMSH|^~\\&|A|B|C|D|2026||SIU^S12|CUT-1|P|2.5\rSCH|1" + frame(MSG))
    assert isinstance(events[0], FrameError) and events[0].problem == "truncated"
    assert read_header(events[0].partial).control_id == "CUT-1"
    assert events[1] == Frame(MSG)


def test_the_stream_ending_inside_a_frame_is_truncated() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x0bMSH|partial") == []
    assert decoder.pending == len(b"MSH|partial")
    [error] = decoder.close()
    assert (error.problem, error.partial) == ("truncated", b"MSH|partial")


def test_garbage_between_frames_is_reported_and_whitespace_is_not() -> None:
    events = FrameDecoder().feed(b"\r\n  " + frame(b"MSH|a") + b"NOISE" + frame(b"MSH|b"))
    assert events == [Frame(b"MSH|a"), FrameError("garbage", 5), Frame(b"MSH|b")]


def test_oversize_and_empty_frames() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    events = decoder.feed(frame(b"MSH|" + b"x" * 50) + frame(b"") + frame(b"MSH|ok"))
    assert [e.problem if isinstance(e, FrameError) else e.payload for e in events] == ["oversize", "empty", b"MSH|ok"]
    # Oversize arriving in pieces: the frame is dropped as it grows, the next one still decodes.
    decoder = FrameDecoder(max_frame_bytes=10)
    out = decoder.feed(b"\x0bMSH|" + b"y" * 20) + decoder.feed(b"z" * 20 + b"\x1c\r") + decoder.feed(frame(b"MSH|2"))
    assert [e.problem if isinstance(e, FrameError) else e.payload for e in out] == ["oversize", b"MSH|2"]


def test_frame_refuses_block_characters_inside_the_message() -> None:
    with pytest.raises(ValueError, match="0x0B or 0x1C"):
        frame(b"MSH|\x1c")


def test_ack_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    now = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    ack = hl7.parse(build_ack(read_header(MSG), "AA", now=now, control_id="ACK-1"))
    msh = ack.segment("MSH")
    assert [str(msh[i]) for i in (3, 4, 5, 6, 7, 9, 10, 11, 12)] == [
        "BRIDGE", "BRIDGEFAC", "SYNSCHED", "SYNFAC", "20261201093000+0000", "ACK^S12^ACK", "ACK-1", "P", "2.5.1"]
    assert [str(f) for f in ack.segment("MSA")[1:3]] == ["AA", "SYN-1"]


def test_ar_carries_an_err_segment_saying_why() -> None:
    text = build_ack(read_header(MSG), "AR", error=AckError("101", "no filler appointment id", "SCH-2"))
    ack = hl7.parse(text)
    err = ack.segment("ERR")
    assert str(err[2]) == "SCH^1^2" and str(err[3]) == "101^Required field missing^HL70357" and str(err[4]) == "E"
    parsed = parse_ack(text)
    assert (parsed.code, parsed.control_id, parsed.error_code, parsed.error_message) == (
        "AR", "SYN-1", "101", "no filler appointment id")


def test_ack_escapes_delimiters_and_keeps_the_senders_separators() -> None:
    custom = b"MSH*:~\\&*APP*FAC*RCV*RFAC*20260101**SIU:S15*C-9*T*2.3\rPID*1"
    text = build_ack(read_header(custom), "AR", error=AckError("201", "SIU^S16 * other", "MSH-9"))
    assert text.startswith("MSH*:~\\&*RCV*RFAC*APP*FAC*")
    assert "ACK:S15:ACK*" in text and "*T*2.3\r" in text
    assert "SIU^S16 \\F\\ other" in text  # '^' is data under ':' components; '*' is this sender's field separator
    assert parse_ack(text).control_id == "C-9"


def test_ack_for_something_that_is_not_hl7_still_parses() -> None:
    ack = parse_ack(build_ack(read_header(b"GET / HTTP/1.1"), "AR", error=AckError("100", "not HL7", "MSH")))
    assert (ack.code, ack.control_id) == ("AR", "")


def test_a_file_of_several_messages_splits_on_msh() -> None:
    text = "\n" + siu(control_id="F-1").replace("\r", "\n") + "\n\n" + siu(control_id="F-2").replace("\r", "\r\n")
    messages = split_messages(text)
    assert [read_header(m).control_id for m in messages] == ["F-1", "F-2"]
    assert messages[0] == siu(control_id="F-1")
