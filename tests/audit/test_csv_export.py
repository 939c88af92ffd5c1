"""A CSV export and its signed manifest: the untouched pair verifies; one changed byte in the CSV,
a changed manifest, or another key does not."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sqlalchemy.engine import Engine

from adapter.audit.csv_export import COLUMNS, export_csv, manifest_path, render_csv, verify_export
from adapter.audit.signing import AuditSigner
from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.storage.db import transaction, utcnow


def _seed(engine: Engine) -> None:
    with transaction(engine) as session:
        record(session, *[AuditEntry(Kind.LINK_ACCESS, Action.READ, agent="patient", source="192.0.2.7",
                                     patient_ref=f"Patient/example-{i % 2}", entity_ref=f"link/{i}")
                          for i in range(6)])


def test_the_untouched_pair_verifies_and_holds_every_selected_row(engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    signer = AuditSigner.throwaway()
    with transaction(engine) as session:
        manifest = export_csv(session, [("patient", "Patient/example-1")], tmp_path, signer)
    path = tmp_path / manifest.file
    assert verify_export(path, manifest_path(path), signer.public) == (True, None)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4 and manifest.rows == 3
    assert {row[COLUMNS.index("patient_ref")] for row in rows[1:]} == {"Patient/example-1"}
    assert manifest.first_seq is None and manifest.query == [["patient", "Patient/example-1"]]


def test_one_changed_byte_in_the_csv_fails(engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    signer = AuditSigner.throwaway()
    with transaction(engine) as session:
        manifest = export_csv(session, [], tmp_path, signer)
    path = tmp_path / manifest.file
    data = bytearray(path.read_bytes())
    index = data.index(b"192.0.2.7") + 8
    data[index] = ord("8")  # 192.0.2.7 -> 192.0.2.8: same length, one byte
    path.write_bytes(bytes(data))
    ok, problem = verify_export(path, manifest_path(path), signer.public)
    assert not ok and problem is not None and "SHA-256" in problem


def test_a_changed_manifest_or_another_key_fails(engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    signer = AuditSigner.throwaway()
    with transaction(engine) as session:
        manifest = export_csv(session, [], tmp_path, signer)
    path = tmp_path / manifest.file
    fields = json.loads(manifest_path(path).read_text())
    fields["rows"] = 5
    manifest_path(path).write_text(json.dumps(fields))
    ok, problem = verify_export(path, manifest_path(path), signer.public)
    assert not ok and problem is not None and "signature" in problem
    fields["rows"] = 6
    manifest_path(path).write_text(json.dumps(fields))
    assert verify_export(path, manifest_path(path), signer.public) == (True, None)
    assert verify_export(path, manifest_path(path), AuditSigner.throwaway().public)[0] is False


def test_a_100k_row_export_renders_every_row() -> None:
    # How fast is a benchmark question; a timed assertion here would fail on a loaded machine.
    at = utcnow()
    rows = [(seq, bytes(32), seq, at, "disclosure", "R", "0", "system", None, None, "Patient/example-1",
             "Appointment/example-9", None, '{"t":"reminder"}') for seq in range(1, 100_001)]
    data, count, first, last = render_csv(rows)
    assert (count, first, last) == (100_000, 1, 100_000)
    assert data.count(b"\r\n") == 100_001


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_made_inert(engine: Engine, tmp_path: Path) -> None:
    with transaction(engine) as session:
        record(session, AuditEntry(Kind.ADMIN, Action.EXECUTE, agent="user:=HYPERLINK(\"http://example.test\")"))
    signer = AuditSigner.throwaway()
    with transaction(engine) as session:
        manifest = export_csv(session, [], tmp_path, signer)
    path = tmp_path / manifest.file
    [row] = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert row["agent"].startswith("user:")  # only cells that start with a formula character change
    assert verify_export(path, manifest_path(path), signer.public) == (True, None)
    escaped = render_csv([(1, None, 1, utcnow(), "=1+1", "-x", "ok")])[0].decode()
    assert "'=1+1" in escaped and "'-x" in escaped and ",ok" in escaped
