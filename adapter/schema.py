"""The whole schema: imports every capability's tables so that ``SQLModel.metadata`` holds them all.

Each capability owns its tables (``adapter/*/tables.py``, ``portal_links/tables.py``); every schema
change is an Alembic migration in ``adapter/storage/migrations``, and the migrations are checked
against this metadata (``tests/storage/test_schema.py``).

No table holds a FHIR payload, a patient name or a phone number in clear text: the inbox keeps
references only, the outbox keeps the PHI-free template object and the recipient encrypted
(:mod:`adapter.security.crypto`), token tables keep SHA-256 hashes of tokens.
"""

from __future__ import annotations

from sqlmodel import SQLModel

from adapter.audit import tables as audit_tables
from adapter.conversation import tables as conversation_tables
from adapter.education import tables as education_tables
from adapter.feeds import hl7_tables
from adapter.feeds import tables as feed_tables
from adapter.ops import tables as ops_tables
from adapter.outbox import tables as outbox_tables
from adapter.recipients import tables as recipient_tables
from adapter.scheduling import tables as scheduling_tables
from adapter.security import tables as security_tables
from portal_links import tables as link_tables

TABLE_MODULES = (audit_tables, conversation_tables, feed_tables, hl7_tables, ops_tables, outbox_tables,
                 recipient_tables, scheduling_tables, security_tables, link_tables, education_tables)
METADATA = SQLModel.metadata
