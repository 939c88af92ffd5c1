"""Turning pydantic's validation errors on a rule into (field path, message) an integration engineer can act on.

pydantic locates an error inside a discriminated union with the tag as an extra path part
(``body.1.local_date.source``); the path shown here drops it (``body[1].source``) because the
rule file has no such level.
"""

from __future__ import annotations

from typing import Any

from mappings.kinds import BODY_KINDS, BUTTON_KINDS
from mappings.schema import FIELDS_BY_PART, fields_of_kind

_TAGS = frozenset(BODY_KINDS) | frozenset(BUTTON_KINDS)


def describe_validation_error(error: dict[str, Any]) -> tuple[str, str]:
    """The field path (relative to the rule) and a message for one pydantic error dict.

    The input value is never part of the message: errors are also logged, and although rule files
    hold no PHI, keeping messages value-free everywhere keeps the habit (DESIGN.md).
    """
    loc = tuple(error.get("loc", ()))
    field = _path(loc)
    kind = error.get("type")
    context = error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        accepts = f"; this part accepts: {', '.join(allowed)}" if allowed else ""
        return field, f"unknown field {str(loc[-1])!r}{accepts} (see mappings/README.md)"
    if kind == "union_tag_invalid":
        part = "buttons" if "buttons" in loc else "body"
        here = BUTTON_KINDS if part == "buttons" else BODY_KINDS
        elsewhere = BODY_KINDS if part == "buttons" else BUTTON_KINDS
        tag = str(context.get("tag", ""))
        hint = f" ({tag} belongs in {'body' if part == 'buttons' else 'buttons'})" if tag in elsewhere else ""
        return field, (f"kind {tag!r} is not an allow-listed {part} parameter kind{hint}; "
                       f"allowed here: {', '.join(here)}")
    if kind == "union_tag_not_found":
        return field, "every parameter needs a `kind`"
    if kind == "missing":
        return field, "this required field is missing"
    return field, str(error.get("msg", "is invalid"))


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _TAGS and index > 0 and isinstance(loc[index - 1], int):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def _allowed_fields(parent: tuple[Any, ...]) -> tuple[str, ...]:
    if not parent:
        return FIELDS_BY_PART["rule"]
    last = parent[-1]
    if last in _TAGS:
        return fields_of_kind(str(last))
    if isinstance(last, str) and last in FIELDS_BY_PART:
        return FIELDS_BY_PART[last]
    return ()
