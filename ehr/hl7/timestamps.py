"""Reads HL7 v2 date/time values (DTM, and TS component 1) into timezone-aware datetimes.

Format per HL7 v2.5.1 chapter 2A.22 (DTM): ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``.
A value without an offset is in the sender's local time, which the message does not say; the
facility's configured zone is applied (HL7 v2.5.1 2A.22: "the time zone of the sender").
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

_DTM = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,4}))?(?P<offset>[+-]\d{4})?$"
)


class InvalidTimestamp(ValueError):
    """The value is not an HL7 DTM; the message never includes the value itself."""


def parse_dtm(value: str, default_zone: tzinfo) -> datetime:
    """The instant ``value`` names; missing month/day default to 1, missing time parts to 0."""
    match = _DTM.match(value.strip())
    if match is None:
        raise InvalidTimestamp("not an HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    parts = match.groupdict()
    zone: tzinfo = default_zone
    if parts["offset"]:
        sign = -1 if parts["offset"][0] == "-" else 1
        hours, minutes = int(parts["offset"][1:3]), int(parts["offset"][3:5])
        if hours > 23 or minutes > 59:
            raise InvalidTimestamp("the UTC offset is out of range")
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    fraction = parts["fraction"] or ""
    try:
        return datetime(
            int(parts["year"]), int(parts["month"] or 1), int(parts["day"] or 1),
            int(parts["hour"] or 0), int(parts["minute"] or 0), int(parts["second"] or 0),
            int((fraction + "000000")[:6]), tzinfo=zone,
        )
    except ValueError as exc:
        raise InvalidTimestamp("a date or time part is out of range") from exc


def format_dtm(moment: datetime) -> str:
    """``moment`` as a DTM to the second with its offset (used in the ACK's MSH-7)."""
    return moment.strftime("%Y%m%d%H%M%S%z")
