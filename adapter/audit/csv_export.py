"""Audit exports as CSV (RFC 4180) with a signed manifest, so an export handed to an auditor or a
court can be shown to be complete and unchanged (45 CFR 164.312(c)(1) integrity).

The manifest names the file and states its byte length, SHA-256, row count, seq range, the query
that selected it, when and with which key it was made; ``signature`` is Ed25519 (RFC 8032) over the
canonical JSON (sorted keys, no spaces, UTF-8) of the manifest without ``signature``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlmodel import Session

from adapter.audit.search import EXPORT_COLUMNS, AuditQuery, iter_audit_values
from adapter.audit.signing import AuditPublicKey, AuditSigner
from adapter.storage.db import utcnow

COLUMNS = EXPORT_COLUMNS


@dataclass(frozen=True)
class Manifest:
    file: str
    byte_length: int
    sha256: str
    rows: int
    first_seq: int | None
    last_seq: int | None
    query: list[list[str]]
    created_at: str
    key_id: str
    signature: str = ""

    def unsigned(self) -> bytes:
        """The canonical bytes the signature covers."""
        fields = asdict(self)
        fields.pop("signature")
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP "CSV
    injection"): agent names and credential names are typed by people. The manifest signs the
    escaped bytes, so what the auditor opens is what was signed."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def render_csv(rows: Iterable[Sequence[Any]]) -> tuple[bytes, int, int | None, int | None]:
    """The CSV bytes, row count and seq range of ``rows`` (tuples in :data:`COLUMNS` order)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count, first, last = 0, None, None
    for row in rows:
        # Only the hash (index 1) and the time (3) need converting; the csv module writes None as "".
        seq, digest, event_id, at, *rest = row
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        writer.writerow((seq, digest.hex() if digest else None, event_id, at.isoformat(),
                         *(_inert(value) for value in rest)))
        count += 1
        if seq is not None:
            first = seq if first is None else min(first, seq)
            last = seq if last is None else max(last, seq)
    return buffer.getvalue().encode("utf-8"), count, first, last


def build_export(session: Session, params: AuditQuery | Sequence[tuple[str, str]],
                 signer: AuditSigner) -> tuple[str, bytes, Manifest]:
    """The file name, CSV bytes and signed manifest of the records ``params`` select."""
    query = params.pairs if isinstance(params, AuditQuery) else tuple(params)
    data, count, first, last = render_csv(iter_audit_values(session, params))
    now = utcnow()
    name = f"audit-{now:%Y%m%dT%H%M%S%fZ}.csv"
    manifest = Manifest(name, len(data), hashlib.sha256(data).hexdigest(), count, first, last,
                        [[key, value] for key, value in query if key not in ("_count", "_offset")],
                        now.isoformat(), signer.key_id)
    signature = base64.b64encode(signer.sign(manifest.unsigned())).decode("ascii")
    return name, data, Manifest(**{**asdict(manifest), "signature": signature})


def export_csv(session: Session, params: AuditQuery | Sequence[tuple[str, str]], out_dir: Path,
               signer: AuditSigner) -> Manifest:
    """Writes ``audit-<timestamp>.csv`` and ``audit-<timestamp>.manifest.json`` into ``out_dir``."""
    name, data, manifest = build_export(session, params, signer)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_bytes(data)
    manifest_path(out_dir / name).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def manifest_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".manifest.json")


def verify_export_bytes(data: bytes, name: str, manifest_json: str | bytes,
                        public_key: AuditPublicKey) -> tuple[bool, str | None]:
    """Checks a CSV's bytes against its manifest: ``(True, None)`` or ``(False, what is wrong)``."""
    try:
        fields = json.loads(manifest_json)
        manifest = Manifest(**fields)
        signature = base64.b64decode(manifest.signature, validate=True)
    except (ValueError, TypeError) as exc:
        return False, f"the manifest is not a valid manifest: {type(exc).__name__}"
    if manifest.key_id != public_key.key_id:
        return False, f"the manifest was signed with key {manifest.key_id[:64]}, not {public_key.key_id}"
    if not public_key.verify(signature, manifest.unsigned()):
        return False, "the manifest's signature does not verify: the manifest was changed"
    if manifest.file != name:
        return False, f"the manifest is for {manifest.file[:100]!r}, not {name[:100]!r}"
    if len(data) != manifest.byte_length:
        return False, f"the file has {len(data)} bytes; the manifest says {manifest.byte_length}"
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        return False, "the file's SHA-256 differs from the manifest's: the file was changed"
    return True, None


def verify_export(csv_path: Path, manifest_file: Path, public_key: AuditPublicKey) -> tuple[bool, str | None]:
    """:func:`verify_export_bytes` on files."""
    try:
        data, manifest_json = csv_path.read_bytes(), manifest_file.read_bytes()
    except OSError as exc:
        return False, f"cannot read the export: {exc.strerror}"
    return verify_export_bytes(data, csv_path.name, manifest_json, public_key)
