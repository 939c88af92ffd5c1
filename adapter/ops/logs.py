"""The service's log lines: plain text or JSON lines (settings: ``log_format``), each carrying the
``event_id`` of the notification being worked on, with link tokens redacted in every record.

``event_id`` follows one notification through intake → decide → send → status: a short SHA-256
digest of the EHR resource it is about (``Appointment/123`` → 16 hex digits), so every step can
compute it from what it holds (the inbox event, the decided version, the outbox row) and a line
names no EHR identifier. :func:`traced` sets it for the lines logged inside it (a context variable:
each asyncio task and thread sees its own). JSON lines follow the usual shape of log shippers
(one object per line: ``ts``, ``level``, ``logger``, ``message``, then ``event_id`` and ``exc_info``
when present). The redaction is :class:`portal_links.redact.TokenRedactingFilter`, on the handler
itself, so records from child loggers pass it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

from portal_links.redact import TokenRedactingFilter, redact_link_tokens

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_event_id: ContextVar[str | None] = ContextVar("event_id", default=None)


def event_id_of(resource_ref: str) -> str:
    """The correlation id of everything done about ``resource_ref`` (``Type/id``, no version)."""
    return hashlib.sha256(resource_ref.encode()).hexdigest()[:16]


def current_event_id() -> str | None:
    return _event_id.get()


@contextmanager
def traced(resource_ref: str | None) -> Iterator[str | None]:
    """Lines logged inside carry the event id of ``resource_ref`` (none for None)."""
    value = event_id_of(resource_ref) if resource_ref else None
    token = _event_id.set(value)
    try:
        yield value
    finally:
        _event_id.reset(token)


class EventIdFilter(logging.Filter):
    """Puts the current event id on every record (``record.event_id``, None outside :func:`traced`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event_id", None) is None:
            record.event_id = _event_id.get()
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside a message are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name,
            "message": redact_link_tokens(record.getMessage()),
        }
        event_id = getattr(record, "event_id", None)
        if event_id:
            line["event_id"] = event_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = redact_link_tokens(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_handler(log_format: LogFormat = "text", stream: TextIO | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in ``log_format``, redacting and adding the event id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TokenRedactingFilter())
    handler.addFilter(EventIdFilter())
    return handler


def configure_logging(level: str | int = "INFO", log_format: LogFormat = "text") -> logging.Handler:
    """Replaces the root logger's handlers with :func:`log_handler`'s; returns it."""
    handler = log_handler(log_format)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines carry URLs, one per call
    return handler
