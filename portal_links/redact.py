"""Keeps link tokens out of logs: ``/l/<token>`` becomes ``/l/[token]`` in every log record.

The token is a bearer credential for a patient's link, so access logs (uvicorn's, a proxy's,
an HTTP client's) must not keep it. :func:`install_log_redaction` attaches
:class:`TokenRedactingFilter` to the root logger, to ``uvicorn``, ``uvicorn.access`` and
``uvicorn.error``, and to the handlers they have at that moment (records propagated from child
loggers pass only the handlers' filters, not the root logger's). Call it after logging is
configured (after uvicorn has applied its log config); calling it again is harmless.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_TOKEN_PATH = re.compile(r"/l/(?!\[token\])[^/\s?#\"'<>]+")
REDACTED = "/l/[token]"
LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error")


def redact_link_tokens(text: str) -> str:
    return _TOKEN_PATH.sub(REDACTED, text)


def _redact(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value  # keeps %d and %f working
    if isinstance(value, str):
        return redact_link_tokens(value)
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    redacted = redact_link_tokens(text)
    return value if redacted == text else redacted  # e.g. httpx logs an httpx.URL object


class TokenRedactingFilter(logging.Filter):
    """Rewrites a record's message and arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_link_tokens(record.msg)
        elif record.msg is not None and not isinstance(record.msg, (int, float)):
            record.msg = redact_link_tokens(str(record.msg))
        if isinstance(record.args, dict):
            record.args = {key: _redact(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact(value) for value in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_link_tokens(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_link_tokens(record.exc_text)
        return True


_FILTER = TokenRedactingFilter()


def _attach(filterer: logging.Filterer) -> None:
    if not any(isinstance(existing, TokenRedactingFilter) for existing in filterer.filters):
        filterer.addFilter(_FILTER)


def install_log_redaction() -> TokenRedactingFilter:
    """Attaches the filter (once) to the root and uvicorn loggers and their current handlers."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        _attach(logger)
        for handler in logger.handlers:
            _attach(handler)
    return _FILTER
