"""The roles of the auditor and admin APIs and who holds one (45 CFR 164.312(a)(1) access control,
minimum necessary): each role reaches only what its job needs.

- ``auditor``: reads and exports audit content.
- ``privacy_officer``: reads audit content, and resolves a patient reference to a person with a stated
  reason (itself audited).
- ``admin``: configuration and operations, never audit content.
- ``operator``: the read-mostly operations role of the browser console (views queues, alerts and
  feeds; acknowledges alerts, retries dead letters, resumes sending), never audit content and never
  the admin API's configuration (credentials, pause).
- ``integration``: the EHR and Meta callbacks only (they authenticate by their own signatures), so it
  reaches nothing under ``/audit`` or ``/admin``.

:mod:`adapter.security.access` enforces them on each request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    AUDITOR = "auditor"
    PRIVACY_OFFICER = "privacy_officer"
    ADMIN = "admin"
    OPERATOR = "operator"
    INTEGRATION = "integration"


AUDIT_READERS = (Role.AUDITOR, Role.PRIVACY_OFFICER)
OPERATIONS = (Role.OPERATOR, Role.ADMIN)  # the console's operator pages


@dataclass(frozen=True)
class Principal:
    """Who a valid session belongs to."""

    name: str
    role: Role
    credential_id: int

    @property
    def agent(self) -> str:
        return f"user:{self.name}"
