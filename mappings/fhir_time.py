"""Reading a FHIR ``instant``/``dateTime`` into an aware :class:`datetime`, or saying why not.

Formats: https://hl7.org/fhir/R4/datatypes.html#dateTime and #instant. A ``dateTime`` may be a bare
year, year-month or date; with a time it SHALL carry a zone offset. For a message we need an exact
moment, so anything less precise (or without an offset) is refused rather than guessed: sending the
wrong local time is worse than sending nothing and letting a person look.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# The R4 regex for dateTime, restricted to the forms that carry a time (seconds are mandatory there).
_DATETIME = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?$"
)
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


class NotAnInstant(ValueError):
    """The value is not an exact moment; the message says why without repeating the value."""


def parse_instant(value: object) -> datetime:
    """An aware datetime for a FHIR dateTime/instant that has a time and an offset."""
    if not isinstance(value, str) or not value.strip():
        raise NotAnInstant("has no value")
    text = value.strip()
    if _PARTIAL_DATE.match(text):
        raise NotAnInstant("is a date without a time of day")
    match = _DATETIME.match(text)
    if match is None:
        raise NotAnInstant("is not a FHIR dateTime (YYYY-MM-DDThh:mm:ss with a zone offset)")
    if match["zone"] is None:
        raise NotAnInstant("has a time but no time-zone offset, so the local time is unknown")
    zone: timezone = UTC
    if match["zone"] != "Z":
        sign = 1 if match["zone"][0] == "+" else -1
        hours, minutes = int(match["zone"][1:3]), int(match["zone"][4:6])
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")  # Python keeps microseconds only
    try:
        return datetime(
            int(match["year"]), int(match["month"]), int(match["day"]),
            int(match["hour"]), int(match["minute"]), int(match["second"]), int(fraction), tzinfo=zone,
        )
    except ValueError as exc:  # e.g. month 13, or a leap second (ss=60) Python cannot represent
        raise NotAnInstant("is not a real calendar moment") from exc
