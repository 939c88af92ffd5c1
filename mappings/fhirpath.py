"""FHIRPath source expressions of mapping rules: checked once at start-up, evaluated on plain dicts.

FHIRPath: https://hl7.org/fhirpath/N1/ (the version FHIR R4 uses, https://hl7.org/fhir/R4/fhirpath.html).

``fhirpathpy.compile`` recovers silently from syntax errors (ANTLR's default error strategy: the
expression ``Appointment..start`` compiles and quietly yields nothing), and it resolves function
names only when evaluating. So :func:`check_expression` parses with a listener that raises, makes
sure the whole text was consumed, and dry-runs the compiled expression on an empty resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

_LEADING_TYPE = re.compile(r"^\s*([A-Z][A-Za-z]+)\s*(?:\.|$)")


class FhirPathProblem(ValueError):
    """An expression is not valid FHIRPath, or cannot apply to the rule's resource type."""


class _RaisingListener(ErrorListener):
    def syntaxError(  # ANTLR's callback name
        self, recognizer: Any, offending_symbol: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise FhirPathProblem(f"not valid FHIRPath at column {column + 1}: {msg}")


def check_expression(expression: str, resource_type: str) -> None:
    """Raises :class:`FhirPathProblem` unless ``expression`` parses completely, uses only functions
    fhirpathpy implements, and (when it starts with a type name) starts with ``resource_type``."""
    if not expression.strip():
        raise FhirPathProblem("the expression is empty")
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.entireExpression()  # ends with EOF, so trailing garbage is a syntax error too
    leading = _LEADING_TYPE.match(expression)
    if leading and leading.group(1) != resource_type:
        raise FhirPathProblem(
            f"starts with {leading.group(1)!r} but the rule is for {resource_type}; "
            f"write it as {resource_type}.… so it can select something"
        )
    try:
        compiled(expression)({"resourceType": resource_type})
    except Exception as exc:  # fhirpathpy raises bare Exception for unknown functions
        raise FhirPathProblem(f"cannot be evaluated: {exc}") from exc


@lru_cache(maxsize=256)
def compiled(expression: str) -> Callable[..., list[Any]]:
    """The compiled form of an expression, cached: rules hold few distinct expressions."""
    function: Callable[..., list[Any]] = fhirpathpy.compile(expression)
    return function


def evaluate(expression: str, resource: Mapping[str, Any]) -> list[Any]:
    """Evaluates ``expression`` on a plain resource dict (fhirpathpy does not mutate it without a model)."""
    return compiled(expression)(resource)
