"""The audit trail: who disclosed what to whom, who opened which link, who changed what — and proof
that the record was not altered (45 CFR 164.312(b); IHE Basic Audit Log Patterns, BALP).

- :mod:`adapter.audit.tables` — the tables (insert-only, guarded by triggers and grants).
- :mod:`adapter.audit.trail` — :func:`record`: an audit entry written in the caller's transaction.
- :mod:`adapter.audit.chain` — the chaining step: gapless seqs and the SHA-256 hash chain.
- :mod:`adapter.audit.merkle` — RFC 6962 Merkle Tree Hash over a checkpoint's records.
- :mod:`adapter.audit.checkpoints` — signed checkpoints, their JSONL export, :class:`AuditKeeper`.
- :mod:`adapter.audit.verify` — :func:`verify_trail`: recompute from a checkpoint, name the first bad record.
- :mod:`adapter.audit.holds`, :mod:`adapter.audit.purge` — legal holds; retention purge to a boundary checkpoint.
- :mod:`adapter.audit.grants` — PostgreSQL grants: the app role may insert audit records, never change them.
"""
