"""The audit trail: who disclosed what to whom, who opened which link, who changed what — and proof
that the record was not altered (45 CFR 164.312(b); IHE Basic Audit Log Patterns, BALP).

- :mod:`adapter.audit.models` — the tables (insert-only, guarded by triggers and grants).
- :mod:`adapter.audit.trail` — :func:`record`: an audit entry written in the caller's transaction.
"""
