"""Checks a send request the way the Cloud API does, against the template registry.

Follows the "Messages" reference (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages;
request shapes as in facebook/openapi ``business-messaging-api_v23.0.yaml``, ``POST
/{Version}/{Phone-Number-ID}/messages``) and "Template messages" (components: header/body parameters,
``button`` components with ``sub_type`` and ``index``; ``parameter_name`` for ``parameter_format: NAMED``),
answering with the codes of the "Error codes" reference: 100, 131008, 131009, 131051, 132000, 132001,
132005, 132015, 132016, 132018.

* text ("Text messages"): ``text.body`` required, at most 4,096 characters; ``preview_url`` a boolean.
* interactive: see :mod:`whatsapp.emulator.interactive`.
* template: checked against the registry's shape; its status (paused 132015, disabled 132016, not
  approved 132001) comes from :class:`whatsapp.emulator.templates.TemplateRegistry`.

Plain dict access only: this runs on the emulator's hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from whatsapp.catalogue import Template
from whatsapp.emulator.graph_errors import GraphError
from whatsapp.emulator.interactive import check_interactive

SUPPORTED_TYPES = frozenset({"template", "text", "interactive"})
META_TYPES = frozenset({"audio", "contacts", "document", "image", "location", "reaction", "sticker", "video"})
_NOT_DIGIT = re.compile(r"\D")
_BAD_PARAM_TEXT = re.compile(r"[\n\t]| {5,}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MAX_CALLBACK_DATA = 512
MAX_PAYLOAD = 256
MAX_TEXT_BODY = 4096
MAX_TEMPLATE_BODY = 1024


class TemplateSource(Protocol):
    """A :class:`~whatsapp.catalogue.TemplateCatalogue` or the emulator's template registry."""

    def get(self, name: str, language: str) -> Template | None: ...


@dataclass(frozen=True, slots=True)
class ValidSend:
    """What the emulator keeps from an accepted request."""

    to: str
    wa_id: str
    type: str
    free_form: bool  # needs the 24-hour customer service window
    biz_opaque_callback_data: str | None
    category: str | None  # the template's category, for pricing


def validate_send(payload: Any, catalogue: TemplateSource) -> ValidSend:
    """Returns what was accepted, or raises :class:`GraphError` with Meta's code."""
    if not isinstance(payload, dict):
        raise GraphError(100, "Request body must be a JSON object")
    product = payload.get("messaging_product")
    if product is None:
        raise GraphError(100, "The parameter messaging_product is required.")
    if product != "whatsapp":
        raise GraphError(100, "Param messaging_product must be one of {WHATSAPP}")
    recipient_type = payload.get("recipient_type", "individual")
    if recipient_type != "individual":
        raise GraphError(100, "Param recipient_type must be one of {INDIVIDUAL}")
    to = payload.get("to")
    if not isinstance(to, str) or not to.strip():
        raise GraphError(100, "The parameter to is required.")
    wa_id = _NOT_DIGIT.sub("", to)
    if not 7 <= len(wa_id) <= 15:
        raise GraphError(131009, "Param to is not a valid phone number")
    callback = payload.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > MAX_CALLBACK_DATA):
        raise GraphError(100, f"Param biz_opaque_callback_data is at most {MAX_CALLBACK_DATA} characters")
    kind = payload.get("type", "text")  # Meta's default type is text
    category = None
    if kind == "template":
        category = _check_template(payload.get("template"), catalogue).category
    elif kind == "text":
        _check_text(payload.get("text"))
    elif kind == "interactive":
        check_interactive(payload.get("interactive"))
    elif kind in META_TYPES:
        raise GraphError(131051, f"The emulator does not implement message type {kind}")
    else:
        raise GraphError(100, "Param type must be one of {TEMPLATE, TEXT, INTERACTIVE, …}")
    return ValidSend(to=to, wa_id=wa_id, type=kind, free_form=kind != "template",
                     biz_opaque_callback_data=callback, category=category)


def _check_text(text: Any) -> None:
    body = text.get("body") if isinstance(text, dict) else None
    if not isinstance(body, str) or not body:
        raise GraphError(100, "The parameter text['body'] is required.")
    if len(body) > MAX_TEXT_BODY:
        raise GraphError(100, f"Param text['body'] must be at most {MAX_TEXT_BODY} characters long.")
    preview_url = text.get("preview_url", False)
    if not isinstance(preview_url, bool):
        raise GraphError(100, "Param text['preview_url'] must be a boolean")


def _check_template(raw: Any, catalogue: TemplateSource) -> Template:
    if not isinstance(raw, dict):
        raise GraphError(100, "The parameter template is required.")
    name = raw.get("name")
    language = raw.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(name, str) or not name:
        raise GraphError(131008, "The parameter template['name'] is required.")
    if not isinstance(code, str) or not code:
        raise GraphError(131008, "The parameter template['language']['code'] is required.")
    template = catalogue.get(name, code)
    if template is None:
        raise GraphError(132001, f"template name ({name}) does not exist in {code}")
    components = raw.get("components", [])
    if not isinstance(components, list):
        raise GraphError(100, "Param template['components'] must be an array")
    body: list[Any] = []
    header: list[Any] = []
    given_buttons: set[int] = set()
    for component in components:
        ctype = str(component.get("type", "")).lower() if isinstance(component, dict) else ""
        params = component.get("parameters", []) if isinstance(component, dict) else None
        if not isinstance(params, list):
            raise GraphError(100, "Param components[].parameters must be an array")
        if ctype == "body":
            body = params
        elif ctype == "header":
            header = params
        elif ctype == "button":
            given_buttons.add(_check_button(component, params, template))
        else:
            raise GraphError(100, f"Param template['components'][]['type'] is not valid: {ctype}")
    _check_parameters("header", header, template.header_parameters, template.parameter_format)
    _check_parameters("body", body, template.body_parameters, template.parameter_format)
    for button in template.buttons:
        if button.is_dynamic_url and button.index not in given_buttons:
            raise GraphError(132000, f"buttons: number of localizable_params (0) does not match the expected "
                                     f"number of params (1) for button at index {button.index}")
    if len(_hydrate(template, body)) > MAX_TEMPLATE_BODY:
        raise GraphError(132005, "body: hydrated text is longer than 1024 characters")
    return template


def _check_parameters(where: str, params: list[Any], expected: tuple[str, ...], fmt: str) -> None:
    if len(params) != len(expected):
        raise GraphError(132000, f"{where}: number of localizable_params ({len(params)}) does not match the "
                                 f"expected number of params ({len(expected)})")
    for param in params:
        if not isinstance(param, dict):
            raise GraphError(100, f"{where}: each parameter must be an object")
        if fmt == "NAMED" and not param.get("parameter_name"):
            raise GraphError(100, f"{where}: parameter_name is missing or empty (NAMED parameters)")
        if param.get("type", "text") == "text":
            text = param.get("text")
            if not isinstance(text, str) or not text:
                raise GraphError(131008, f"{where}: parameter of type text is missing its text value")
            if _BAD_PARAM_TEXT.search(text):
                raise GraphError(132018, "Param text cannot have new-line/tab characters or more than 4 "
                                         "consecutive spaces")
    if fmt == "NAMED" and sorted(str(p["parameter_name"]) for p in params) != sorted(expected):
        raise GraphError(132000, f"{where}: parameter names do not match the template's parameters")


def _check_button(component: dict[str, Any], params: list[Any], template: Template) -> int:
    raw_index = component.get("index")
    try:
        index = int(str(raw_index))  # Meta accepts "0" or 0
    except ValueError:
        raise GraphError(131009, "Param components[]['index'] must be an integer") from None
    if not 0 <= index < len(template.buttons):
        raise GraphError(131009, f"Button at index {index} does not exist in the template")
    button = template.buttons[index]
    sub_type = str(component.get("sub_type", "")).upper()
    if sub_type != button.type:
        raise GraphError(131009, f"Button at index {index} is {button.type}, not {sub_type or 'none'}")
    if sub_type == "QUICK_REPLY":
        for param in params:
            payload = param.get("payload") if isinstance(param, dict) else None
            if not isinstance(payload, str) or len(payload) > MAX_PAYLOAD:
                raise GraphError(131009, f"Quick reply payload must be at most {MAX_PAYLOAD} characters")
    elif sub_type == "URL" and button.is_dynamic_url:
        if len(params) != 1:
            raise GraphError(132000, f"buttons: number of localizable_params ({len(params)}) does not "
                                     f"match the expected number of params (1) for button at index {index}")
        text = params[0].get("text") if isinstance(params[0], dict) else None
        if not isinstance(text, str) or not text:
            raise GraphError(131008, f"Button at index {index}: parameter text is required")
    return index


def _hydrate(template: Template, params: list[Any]) -> str:
    values = {name: str(p.get("text", "")) for name, p in zip(template.body_parameters, params, strict=False)}
    if template.parameter_format == "NAMED":
        values = {str(p.get("parameter_name")): str(p.get("text", "")) for p in params}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template.body_text)
