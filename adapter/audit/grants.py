"""PostgreSQL grants for the application's database role: it can add audit records, never change them.

The triggers of migration 0007 refuse UPDATE and DELETE on the audit tables on both databases, but
the owner of a table can drop a trigger. So in production the service connects as a separate role
that owns nothing and has (IHE BALP's "audit repository is append-only", 45 CFR 164.312(b)):

- ``audit_event``, ``audit_chain``, ``audit_checkpoint``: SELECT, INSERT;
- ``audit_pending`` (the chaining queue): SELECT, INSERT, DELETE;
- ``audit_purge``: SELECT only: purges run as the owner (:mod:`adapter.audit.purge`);
- every other table: SELECT, INSERT, UPDATE, DELETE; every sequence: USAGE, SELECT.

UPDATE is revoked on every audit table, as is DELETE everywhere but the queue, so running it again
tightens a role that had more. Migrations and purges use the owner's URL. SQLite has no roles: there
the triggers are the guard and the file's permissions the rest.
"""

from __future__ import annotations

import re

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

AUDIT_INSERT_ONLY = ("audit_event", "audit_chain", "audit_checkpoint")
AUDIT_QUEUE = "audit_pending"
AUDIT_READ_ONLY = ("audit_purge",)
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class GrantError(RuntimeError):
    """The grants cannot be applied: SQLite, or a role name that is not a plain identifier."""


def grant_app_role(engine: Engine, role: str) -> list[str]:
    """Applies the grants above to ``role`` (which must exist); returns the statements run.

    Run as the tables' owner. Tables created by later migrations need this to be run again.
    """
    if engine.dialect.name != "postgresql":
        raise GrantError("grants need PostgreSQL; on SQLite the audit tables are guarded by triggers only")
    if not _ROLE.match(role):
        raise GrantError("the role name must be a lower-case identifier (letters, digits, underscore)")
    audit = (*AUDIT_INSERT_ONLY, AUDIT_QUEUE, *AUDIT_READ_ONLY)
    others = sorted(set(inspect(engine).get_table_names()) - set(audit))
    statements = [f"GRANT USAGE ON SCHEMA public TO {role}",
                  f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"]
    statements += [f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}" for table in audit]
    statements += [f"GRANT SELECT, INSERT ON {table} TO {role}" for table in AUDIT_INSERT_ONLY]
    statements.append(f"GRANT SELECT, INSERT, DELETE ON {AUDIT_QUEUE} TO {role}")
    statements += [f"REVOKE INSERT ON {table} FROM {role}" for table in AUDIT_READ_ONLY]
    statements += [f"GRANT SELECT ON {table} TO {role}" for table in AUDIT_READ_ONLY]
    statements += [f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}" for table in others]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    return statements
