"""Typed errors for every call to the EHR's FHIR REST API.

The class says what the caller should do; the attributes say what happened. Each error keeps
the underlying cause (an ``httpx`` exception, a JSON error) as ``__cause__``.

Exception tree (following encode/httpx's layout)::

    FhirError                     any failed FHIR interaction
    ├── FhirUnavailableError      retry later: connect error, timeout, 429, 5xx
    │   └── FhirInvalidResponseError   the server answered, but not with the FHIR JSON expected
    ├── FhirAuthError             401 / 403: our credentials are missing, wrong or not allowed
    ├── FhirNotFoundError         404 / 410: no such resource (or it was deleted)
    ├── FhirConflictError         409 / 412: version conflict (``If-Match``) or duplicate
    ├── FhirRequestError          any other 4xx: our request is wrong, do not retry it
    └── FhirPagingLimitError      a search had more pages than the configured bound

HTTP status mapping follows https://hl7.org/fhir/R4/http.html#summary. ``diagnostics`` is a
short summary of the server's OperationOutcome (https://hl7.org/fhir/R4/operationoutcome.html)
built from issue *codes* only: servers echo resource content in ``issue.diagnostics`` text, so
that text is never kept and the messages are safe to log.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

_MAX_ISSUES = 5


class FhirError(Exception):
    """A FHIR interaction failed.

    ``operation`` is the interaction (``read``, ``search``, ``update``, ...), ``resource_type``
    the type it was about (``None`` for system-level calls), ``status_code`` the HTTP status
    (``None`` when no response arrived) and ``diagnostics`` a PHI-free issue-code summary such
    as ``"error:not-found"``.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        resource_type: str | None = None,
        status_code: int | None = None,
        diagnostics: str | None = None,
    ) -> None:
        self.message = message
        self.operation = operation
        self.resource_type = resource_type
        self.status_code = status_code
        self.diagnostics = diagnostics
        super().__init__(self._render())

    def _render(self) -> str:
        target = f" {self.resource_type}" if self.resource_type else ""
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        issues = f" [{self.diagnostics}]" if self.diagnostics else ""
        return f"FHIR {self.operation}{target} failed{status}: {self.message}{issues}"


class FhirUnavailableError(FhirError):
    """The EHR could not answer now; the same request may succeed later.

    ``retry_after`` holds the server's ``Retry-After`` delay in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class FhirInvalidResponseError(FhirUnavailableError):
    """The server answered with something that is not the FHIR JSON the interaction defines."""


class FhirAuthError(FhirError):
    """401/403: the EHR refused our credentials or their scope."""


class FhirNotFoundError(FhirError):
    """404/410: the resource does not exist, or was deleted."""


class FhirConflictError(FhirError):
    """409/412: someone else changed the resource first (stale ``If-Match``) or a duplicate."""


class FhirRequestError(FhirError):
    """Another 4xx, or a request refused before sending: the request itself is wrong."""


class FhirPagingLimitError(FhirError):
    """A search returned more pages than the client may follow; narrow the search."""


def summarize_outcome(body: Any) -> str | None:
    """``"error:not-found, warning:processing"`` from an OperationOutcome; ``None`` otherwise.

    Only ``severity`` and ``code`` (both bound to required value sets, so never free text) and
    coded ``details`` are used; see https://hl7.org/fhir/R4/operationoutcome.html.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    parts: list[str] = []
    issues = body.get("issue")
    for issue in issues if isinstance(issues, list) else []:
        if not isinstance(issue, dict):
            continue
        text = f"{_code(issue.get('severity'))}:{_code(issue.get('code'))}"
        details = issue.get("details")
        codings = details.get("coding") if isinstance(details, dict) else None
        coded = [_code(c.get("code")) for c in codings or [] if isinstance(c, dict) and c.get("code")]
        if coded:
            text += f"({','.join(coded[:3])})"
        parts.append(text)
        if len(parts) == _MAX_ISSUES:
            break
    return ", ".join(parts) or None


def _code(value: Any) -> str:
    # Codes are short tokens; anything else is cut so a misbehaving server cannot smuggle text in.
    text = value if isinstance(value, str) else "?"
    return text[:40] if text.replace("-", "").replace("_", "").replace(".", "").isalnum() else "?"


def error_for_response(response: httpx.Response, *, operation: str, resource_type: str | None) -> FhirError:
    """The error class for a non-2xx answer (https://hl7.org/fhir/R4/http.html#summary)."""
    status = response.status_code
    try:
        body: Any = json.loads(response.content) if response.content else None
    except (ValueError, RecursionError):
        body = None
    context: dict[str, Any] = {
        "operation": operation, "resource_type": resource_type,
        "status_code": status, "diagnostics": summarize_outcome(body),
    }
    if status in (401, 403):
        return FhirAuthError("the FHIR server refused our credentials", **context)
    if status in (404, 410):
        return FhirNotFoundError("not found" if status == 404 else "deleted", **context)
    if status in (409, 412):
        return FhirConflictError("version conflict or duplicate", **context)
    if status == 429 or status >= 500:
        return FhirUnavailableError("the FHIR server is busy or failing", retry_after=_retry_after(response),
                                    **context)
    if 300 <= status < 400:
        return FhirRequestError("unexpected redirect; check fhir_base_url", **context)
    return FhirRequestError("the FHIR server rejected the request", **context)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
