"""Why an HL7 v2 message is rejected, in the terms its ACK reports (HL7 v2.5.1 chapter 2, 2.15.5 ERR).

Each error carries ``code`` from HL7 table 0357 (message error condition codes) and ``location``
(``SEG`` or ``SEG-field``, ERR-2), so :mod:`ehr.hl7.ack` can write an ``AR`` whose ERR segment says
why. The texts are fixed vocabulary: they never quote a field's value, so they are safe to log and
to send back to the sender.
"""

from __future__ import annotations

# HL7 table 0357, the codes this package uses.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
APPLICATION_INTERNAL_ERROR = "207"

_CODE_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


def code_text(code: str) -> str:
    """The table 0357 display text of ``code``."""
    return _CODE_TEXT.get(code, "Application error")


class Hl7MessageError(Exception):
    """The message cannot be accepted as sent: answer ``AR`` (the sender must not resend it unchanged)."""

    code = APPLICATION_INTERNAL_ERROR

    def __init__(self, reason: str, *, location: str | None = None) -> None:
        super().__init__(f"{reason} ({location})" if location else reason)
        self.reason = reason
        self.location = location


class Hl7SyntaxError(Hl7MessageError):
    """Not an HL7 v2 message: no MSH segment first, or unreadable encoding characters."""

    code = SEGMENT_SEQUENCE_ERROR


class MissingSegmentError(Hl7MessageError):
    """A segment the message type requires (PID, SCH, OBR) is absent."""

    code = SEGMENT_SEQUENCE_ERROR


class MissingFieldError(Hl7MessageError):
    """A field the bridge needs (MSH-10, the filler id, the patient id, a start time) is empty."""

    code = REQUIRED_FIELD_MISSING


class InvalidFieldError(Hl7MessageError):
    """A field is present but not of its data type (a timestamp that is not a DTM)."""

    code = DATA_TYPE_ERROR


class UnsupportedMessageError(Hl7MessageError):
    """A message type or trigger event the bridge does not take (only SIU S12-S26 and ORU^R01)."""

    code = UNSUPPORTED_MESSAGE_TYPE


class UnsupportedEventError(Hl7MessageError):
    """A supported message type with a trigger event the bridge does not take (SIU^S16, ORU^R30, ...)."""

    code = UNSUPPORTED_EVENT_CODE
