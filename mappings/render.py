"""Rendering a rule for one resource into the Cloud API ``template`` object, exactly as sent.

Shape: https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#template-object
(``components``: a ``body`` with positional ``text`` parameters, then one ``button`` component per
parameterised button, ``quick_reply`` with a ``payload`` or ``url`` with the dynamic suffix as ``text``).

This is the middle of the one path that builds message content (DESIGN.md): rule → typed,
allow-listed parameters (:mod:`mappings.kinds`) → here → :mod:`mappings.phi_guard` → payload.
The profile is re-checked here as well as at load time, because a render context is built per
message and a wrong one must fail closed rather than send what the profile forbids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mappings import policy
from mappings.context import RenderContext
from mappings.errors import RenderError
from mappings.kinds import ActionToken, LinkToken, ValueProblem
from mappings.rules import Rule

__all__ = ["RenderContext", "RenderError", "render"]

# Meta refuses text parameters with new lines, tabs or more than four consecutive spaces (error 132018).
_UNSENDABLE = re.compile(r"[\n\r\t]| {5,}")


def render(rule: Rule, resource: Mapping[str, Any], ctx: RenderContext) -> dict[str, Any]:
    """The ``template`` object for ``rule`` applied to ``resource``; raises :class:`RenderError`."""
    if resource.get("resourceType") != rule.resource_type:
        raise RenderError(rule.id, "resource", "-", f"the rule is for {rule.resource_type} resources")
    if ctx.language not in rule.languages_for(ctx.profile):
        raise RenderError(rule.id, "language", "-",
                          f"template {rule.template_for(ctx.profile)!r} is not approved in {ctx.language!r}")
    components: list[dict[str, Any]] = []
    body = rule.body_for(ctx.profile)
    if body:
        parameters = []
        for index, param in enumerate(body):
            text = _value(rule, f"body[{index}]", param, resource, ctx)
            if not text.strip() or _UNSENDABLE.search(text):
                raise RenderError(rule.id, f"body[{index}]", param.kind,
                                  "the value is empty or has line breaks, tabs or runs of spaces Meta refuses")
            parameters.append({"type": "text", "text": text})
        components.append({"type": "body", "parameters": parameters})
    for index, button in enumerate(rule.buttons):
        token = _value(rule, f"buttons[{index}]", button, resource, ctx)
        if isinstance(button, ActionToken):
            components.append({"type": "button", "sub_type": "quick_reply", "index": str(index),
                               "parameters": [{"type": "payload", "payload": token}]})
        elif isinstance(button, LinkToken):
            components.append({"type": "button", "sub_type": "url", "index": str(index),
                               "parameters": [{"type": "text", "text": token}]})
    return {"name": rule.template_for(ctx.profile), "language": {"code": ctx.language}, "components": components}


def _value(rule: Rule, where: str, param: Any, resource: Mapping[str, Any], ctx: RenderContext) -> str:
    if not policy.is_allowed(param.kind, ctx.profile):
        raise RenderError(rule.id, where, param.kind, f"the {ctx.profile!r} PHI profile does not allow this kind")
    try:
        value: str = param.value(resource, ctx)
    except ValueProblem as exc:
        raise RenderError(rule.id, where, param.kind, str(exc)) from exc
    return value
