"""The service's log lines (:mod:`adapter.ops.logs`): JSON lines carry the event id set by ``traced``, and
link tokens are redacted in the message and in tracebacks, in both formats. The token is synthetic."""

from __future__ import annotations

import io
import json
import logging

from adapter.ops.logs import event_id_of, log_handler, traced

TOKEN = "synthetic-link-token-0123456789"


def _emit(log_format: str) -> str:
    stream = io.StringIO()
    logger = logging.getLogger("tests.log_format")
    logger.propagate, logger.level = False, logging.INFO
    handler = log_handler(log_format, stream)  # type: ignore[arg-type]
    logger.addHandler(handler)
    try:
        with traced("Appointment/example-1"):
            logger.info("GET %s", f"/l/{TOKEN}")
            try:
                raise ValueError(f"while opening /l/{TOKEN}")
            except ValueError:
                logger.exception("link failed")
        logger.info("outside any notification")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_the_event_id_and_no_link_token() -> None:
    output = _emit("json")
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["message"] for line in lines] == ["GET /l/[token]", "link failed", "outside any notification"]
    assert [line.get("event_id") for line in lines] == [event_id_of("Appointment/example-1")] * 2 + [None]
    assert "ValueError: while opening /l/[token]" in lines[1]["exc_info"]
    assert {"ts", "level", "logger"} <= lines[0].keys() and lines[0]["level"] == "INFO"
    assert TOKEN not in output


def test_text_lines_keep_their_format_and_are_redacted_too() -> None:
    output = _emit("text")
    assert " INFO tests.log_format: GET /l/[token]" in output.splitlines()[0]
    assert TOKEN not in output


def test_the_event_id_is_a_digest_not_the_reference() -> None:
    assert event_id_of("Appointment/example-1") == event_id_of("Appointment/example-1") != event_id_of("Appointment/2")
    assert "example" not in event_id_of("Appointment/example-1") and len(event_id_of("Appointment/example-1")) == 16
