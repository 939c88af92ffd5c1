"""Reading a JSON request body for the auditor and admin APIs: after authentication, capped, and
refused with a clear 4xx whatever it holds.

A body declared as a FastAPI body parameter is read before any dependency runs — so before the
session is checked, and without a size cap — and a validation error echoes the offending input in
its 422, which cannot even be encoded when that input holds a lone surrogate (``"\\ud800"`` is valid
JSON; a 500 follows). :func:`json_body` is a dependency instead: declared after the role dependency,
it runs only for an authenticated caller, reads at most ``max_bytes`` (413), answers 400 for a body
that is not JSON or is nested deeper than the parser follows, and 422 for one the model refuses,
naming the field and the rule, never the input.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

MAX_JSON_BODY_BYTES = 16 * 1024  # the largest body these APIs take is a few hundred bytes
# A field pattern for text that is stored or logged: one line without control characters (PostgreSQL's
# text cannot hold NUL; a newline would forge a log line).
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
Model = TypeVar("Model", bound=BaseModel)


class BodyError(Exception):
    """A body that cannot be read as a request: ``status`` (400, 413) and a message without its content."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_capped(request: Request, max_bytes: int = MAX_JSON_BODY_BYTES) -> bytes:
    """The body, or :class:`BodyError` 413 as soon as it is over ``max_bytes`` (a chunked body or a
    ``Content-Length`` that lies cannot get around the cap)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyError(413, f"the body is over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise BodyError(413, f"the body is over {max_bytes} bytes")
    return bytes(body)


def load_json(raw: bytes) -> Any:
    """``raw`` as JSON, or :class:`BodyError` 400."""
    try:
        return json.loads(raw)
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise BodyError(400, "the body is nested too deeply") from None
    except ValueError:  # not JSON, not UTF-8, or a number over Python's 4300 digits
        raise BodyError(400, "the body is not JSON") from None


def json_body(model: type[Model], max_bytes: int = MAX_JSON_BODY_BYTES) -> Callable[[Request], Awaitable[Model]]:
    """A dependency returning the body as ``model``; declare it after the authentication dependency."""

    async def read(request: Request) -> Model:
        try:
            document = load_json(await read_capped(request, max_bytes))
        except BodyError as error:
            raise HTTPException(error.status, str(error)) from None
        try:
            return model.model_validate(document)
        except ValidationError as error:
            raise HTTPException(422, [_problem(problem) for problem in error.errors(include_input=False)]) from None

    return read


def body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route reading ``model`` with :func:`json_body` (FastAPI cannot
    see a body read by a dependency), for the route's ``openapi_extra``; ``$defs`` inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return inline(defs[ref.rsplit("/", 1)[-1]]) if ref.startswith("#/$defs/") else {
                key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {"requestBody": {"required": required, "content": {"application/json": {"schema": inline(schema)}}}}


def _problem(problem: Any) -> dict[str, Any]:
    """One validation problem as ``{loc, msg, type}``: no input, no context (either may echo it)."""
    return {"loc": ["body", *(_text(part) for part in problem.get("loc", ()))],
            "msg": _text(problem.get("msg", "")), "type": _text(problem.get("type", ""))}


def _text(value: Any) -> Any:
    """Strings with lone surrogates made encodable (a key of the body may be echoed in ``loc``)."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value
