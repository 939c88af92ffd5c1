"""Original-mode acknowledgements: ``AA`` accepted, ``AE`` error (resend), ``AR`` rejected (do not resend).

Per HL7 v2.5.1 chapter 2: 2.9.2 (original acknowledgment rules), 2.14.1 (the ACK message: MSH,
MSA, ERR), 2.15.8 (MSA: MSA-1 code, MSA-2 the original MSH-10) and 2.15.5 (ERR: ERR-2 location,
ERR-3 table 0357 code, ERR-4 severity, ERR-8 user message). The ACK's MSH swaps sender and
receiver (MSH-3/4 are the original MSH-5/6 and vice versa), keeps the original's processing id
(MSH-11) and version (MSH-12), and answers trigger MSH-9.2 with ``ACK^<trigger>^ACK``.

The original's header is read by hand, not by the parser, so a message the parser refuses still
gets an ACK that names it. The ACK uses the original's own separators, so its copied fields stay
valid. MSA-3 (text) is also filled, since v2.3-era engines show only that.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ehr.hl7.errors import code_text
from ehr.hl7.timestamps import format_dtm

AckCode = Literal["AA", "AE", "AR"]
_DEFAULT_ENCODING = "^~\\&"
_counter = itertools.count(1)


@dataclass(frozen=True)
class AckHeader:
    """What an ACK needs from the original MSH (empty strings where the original had nothing)."""

    field_sep: str = "|"
    encoding: str = _DEFAULT_ENCODING
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"


@dataclass(frozen=True)
class AckError:
    """What goes into ERR: a table 0357 ``code``, a location (``PID`` or ``SCH-2``) and a PHI-free reason."""

    code: str
    reason: str
    location: str | None = None


def read_header(raw: bytes | str) -> AckHeader:
    """The original's MSH fields, as far as they can be read; defaults when there is no MSH at all."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.lstrip()
    if not text.startswith("MSH") or len(text) < 8:
        return AckHeader()
    sep = text[3]
    first = re.split(r"\r\n|\n|\r", text, maxsplit=1)[0]
    fields = first.split(sep)
    # fields[1] is MSH-2 (encoding characters); fields[n] is MSH-(n+1).
    encoding = fields[1] if 4 <= len(fields[1]) <= 5 else _DEFAULT_ENCODING

    def msh(n: int) -> str:
        return fields[n - 1] if len(fields) >= n else ""

    component = encoding[0]
    return AckHeader(
        field_sep=sep, encoding=encoding,
        sending_application=msh(3), sending_facility=msh(4),
        receiving_application=msh(5), receiving_facility=msh(6),
        trigger=[*msh(9).split(component), ""][1], control_id=msh(10).split(component)[0],
        processing_id=msh(11) or "P", version=msh(12) or "2.5.1",
    )


def build_ack(header: AckHeader, code: AckCode, *, error: AckError | None = None, text: str | None = None,
              control_id: str | None = None, now: datetime | None = None) -> str:
    """The ACK message (CR-terminated segments) answering ``header``'s message with ``code``."""
    sep, enc = header.field_sep, header.encoding
    moment = now or datetime.now(UTC)
    ack_id = control_id or new_control_id(moment)
    message_type = enc[0].join(["ACK", header.trigger, "ACK"]) if header.trigger else "ACK"
    msh = sep.join(["MSH", enc, header.receiving_application, header.receiving_facility,
                    header.sending_application, header.sending_facility, format_dtm(moment), "",
                    message_type, ack_id, header.processing_id, header.version])
    msa_text = escape(text or (error.reason if error else ""), sep, enc)
    segments = [msh, sep.join(["MSA", code, header.control_id, msa_text]).rstrip(sep)]
    if error is not None:
        segments.append(sep.join([
            "ERR", "", _location(error.location, enc[0]),
            enc[0].join([error.code, escape(code_text(error.code), sep, enc), "HL70357"]),
            "E", "", "", "", escape(error.reason, sep, enc),
        ]))
    return "\r".join(segments) + "\r"


def new_control_id(now: datetime) -> str:
    """A control id unique to this process (MSH-10 is at most 20 characters in v2.5.1)."""
    return f"{now:%y%m%d%H%M%S}{os.getpid() % 1000:03d}{next(_counter) % 100000:05d}"[:20]


def escape(text: str, field_sep: str, encoding: str) -> str:
    """HL7 v2.5.1 2.7.4 escape sequences for the delimiters, so a reason never breaks the message."""
    escape_char = encoding[2] if len(encoding) > 2 else "\\"
    names = {escape_char: "E", field_sep: "F", encoding[0]: "S", encoding[1]: "R"}
    if len(encoding) > 3:
        names[encoding[3]] = "T"
    return "".join(f"{escape_char}{names[c]}{escape_char}" if c in names else c for c in text.replace("\r", " "))


def _location(location: str | None, component: str) -> str:
    """ERR-2 (ERL): segment id, sequence 1, field position — from ``SEG`` or ``SEG-field``."""
    if not location:
        return ""
    segment, _, position = location.partition("-")
    position = position.split(".")[0]
    return component.join([segment, "1", position]) if position else component.join([segment, "1"])
