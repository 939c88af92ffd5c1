"""``bridge audit``: the signing key, chaining and checkpoints, ``verify``, purges, legal holds, grants.

``verify`` exits 0 with a summary when the trail is intact and 1 with the first bad record when it is
not, so it fits a cron job or a SIEM check. Commands that change something are audited themselves
(agent ``cli:<os user>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.engine import Engine

from adapter.cli.progress import progress_bar
from adapter.cli.support import fail, maintenance_url, migrated_engine, operator, say, settings_or_exit
from adapter.settings import Settings

if TYPE_CHECKING:
    from adapter.audit.purge import AuditPurgeReport
    from adapter.audit.signing import AuditSigner

audit_app = typer.Typer(help="The audit trail: keys, chain, checkpoints, verify, purge, holds, grants.",
                        no_args_is_help=True)
hold_app = typer.Typer(help="Legal holds that keep audit records from purges.", no_args_is_help=True)
audit_app.add_typer(hold_app, name="hold")


@audit_app.callback()
def _group() -> None:
    """The audit trail: keys, chain, checkpoints, verify, purge, holds, grants."""


def _signer(settings: Settings) -> AuditSigner:
    from adapter.audit.checkpoints import signer_from_settings
    from adapter.audit.signing import AuditKeyError

    try:
        return signer_from_settings(settings)
    except AuditKeyError as error:
        raise fail(str(error), 2) from None


def _record(engine: Engine, detail: dict[str, str | int | None]) -> None:
    from adapter.audit.trail import Action, AuditEntry, Kind, record
    from adapter.storage.db import transaction

    with transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.ADMIN, action=Action.EXECUTE, agent=operator(), detail=detail))


@audit_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option("--out", help="Where to write the private key (mode 0600).")]) -> None:
    """Creates the Ed25519 key that signs audit checkpoints; prints its id and public key."""
    from adapter.audit.signing import AuditKeyError, AuditSigner

    try:
        signer = AuditSigner.generate_file(out)
    except AuditKeyError as error:
        raise fail(str(error), 2) from None
    say(f"key id: {signer.key_id}")
    say("set audit_signing_key_file to this file; give auditors the public key below")
    say(signer.public.pem().rstrip())


@audit_app.command("public-key")
def public_key() -> None:
    """Prints the public key auditors verify checkpoints with."""
    settings = settings_or_exit()
    if settings.audit_signing_key_file is None:
        raise fail("audit_signing_key_file is not set (demo mode signs with a throwaway key)", 2)
    say(_signer(settings).public.pem().rstrip())


@audit_app.command("chain")
def chain() -> None:
    """Chains every queued audit event, then signs a checkpoint over the new records."""
    from adapter.audit.chain import chain_pending
    from adapter.audit.checkpoints import make_checkpoint

    settings = settings_or_exit()
    signer = _signer(settings)
    engine = migrated_engine(settings)
    try:
        _record(engine, {"op": "audit-chain"})
        chained = 0
        while count := chain_pending(engine):
            chained += count
        checkpoint = make_checkpoint(engine, signer, force=True, export_dir=settings.audit_checkpoint_export_dir)
    finally:
        engine.dispose()
    say(f"chained {chained} record(s)")
    say(f"checkpoint at seq {checkpoint.seq} (records {checkpoint.first_seq}..{checkpoint.seq})" if checkpoint
        else "no new records since the last checkpoint")


@audit_app.command("verify")
def verify(
    from_seq: Annotated[int | None, typer.Option("--from-seq", help="Start at this checkpoint's seq.")] = None,
    checkpoints: Annotated[Path | None, typer.Option(
        "--checkpoints", help="Exported audit-checkpoints.jsonl to compare the database against.")] = None,
    public_key_files: Annotated[list[Path] | None, typer.Option(
        "--public-key", help="The auditor's copy of a public key (PEM); repeat it for every key used since the "
        "trail began (after a rotation); default: the configured key's.")] = None,
) -> None:
    """Recomputes the chain and checks every checkpoint; exit 1 names the first bad record."""
    from adapter.audit.checkpoints import CheckpointExportError, load_exported
    from adapter.audit.signing import AuditKeyError, AuditPublicKey
    from adapter.audit.verify import verify_trail

    settings = settings_or_exit()
    try:
        keys = [AuditPublicKey.load(path) for path in public_key_files] if public_key_files else [
            _signer(settings).public]
        exported = load_exported(checkpoints) if checkpoints else None
    except (AuditKeyError, CheckpointExportError, OSError) as error:
        raise fail(str(error), 2) from None
    engine = migrated_engine(settings)
    try:
        with progress_bar("verifying audit records") as progress:
            report = verify_trail(engine, keys, from_seq=from_seq, exported=exported, progress=progress)
    finally:
        engine.dispose()
    start = f"checkpoint {report.start_seq}" if report.start_seq else "the first record"
    if not report.ok:
        raise fail(f"audit trail NOT intact (checked {report.checked} record(s) from {start}): {report.problem}")
    say(f"audit trail intact: {report.checked} record(s) from {start}, "
        f"{report.checkpoints_checked} signed checkpoint(s), key(s) {', '.join(key.key_id for key in keys)}")


@audit_app.command("purge")
def purge(database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Owner/maintenance database URL (default: audit_maintenance_database_url; on "
        "SQLite the service's own file).")] = None) -> None:
    """Deletes audit records older than retention_audit_years, up to a checkpoint, sparing legal holds."""
    report = run_audit_purge(settings_or_exit(), database_url)
    if report.boundary_seq is None:
        say("no checkpoint is old enough (or a legal hold covers it): nothing purged")
        return
    say(f"purged {report.events_deleted} event(s), {report.records_deleted} chain record(s), "
        f"{report.checkpoints_deleted} checkpoint(s); verification now starts at checkpoint {report.boundary_seq}")


def run_audit_purge(settings: Settings, database_url: str | None = None) -> AuditPurgeReport:
    """The audit purge over the maintenance URL (:func:`adapter.cli.support.maintenance_url`)."""
    from adapter.audit.purge import audit_cutoff, purge_audit
    from adapter.storage.db import make_engine, upgrade

    engine = make_engine(maintenance_url(settings, database_url))
    try:
        upgrade(engine)
        return purge_audit(engine, older_than=audit_cutoff(settings.retention_audit_years),
                           batch_size=settings.retention_batch_size, actor=operator())
    finally:
        engine.dispose()


@hold_app.command("place")
def hold_place(
    reason: Annotated[str, typer.Option("--reason", help="Why (a case number, not patient details).")],
    patient: Annotated[str | None, typer.Option("--patient", help="FHIR reference; omit to hold everything.")] = None,
) -> None:
    """Places a legal hold on one patient's audit records, or on all."""
    from adapter.audit.holds import place_hold

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        hold_id = place_hold(engine, patient, reason, operator())
    finally:
        engine.dispose()
    say(f"legal hold {hold_id} placed on {patient or 'the whole audit trail'}")


@hold_app.command("release")
def hold_release(hold_id: Annotated[int, typer.Argument(help="The hold's id (see `list`).")]) -> None:
    """Releases a legal hold; its record stays."""
    from adapter.audit.holds import HoldNotFoundError, release_hold

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        release_hold(engine, hold_id, operator())
    except HoldNotFoundError as error:
        raise fail(str(error)) from None
    finally:
        engine.dispose()
    say(f"legal hold {hold_id} released")


@hold_app.command("list")
def hold_list() -> None:
    """Lists the active legal holds."""
    from adapter.audit.holds import active_holds

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        holds = active_holds(engine)
    finally:
        engine.dispose()
    for hold in holds:
        say(f"{hold.id}\t{hold.patient_ref or '(all)'}\t{hold.created_at.isoformat(timespec='seconds')}\t"
            f"{hold.created_by}\t{hold.reason}")
    if not holds:
        say("no active legal holds")


@audit_app.command("grant-app-role")
def grant_app_role(
    role: Annotated[str, typer.Argument(help="The PostgreSQL role the service connects as.")],
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Owner database URL (default: audit_maintenance_database_url).")] = None,
) -> None:
    """PostgreSQL: lets ROLE insert audit records but never change or delete them."""
    from adapter.audit.grants import GrantError
    from adapter.audit.grants import grant_app_role as grant
    from adapter.storage.db import make_engine, upgrade

    settings = settings_or_exit()
    engine = make_engine(maintenance_url(settings, database_url))
    try:
        upgrade(engine)
        statements = grant(engine, role)
        _record(engine, {"op": "grant-app-role", "role": role})
    except GrantError as error:
        raise fail(str(error), 2) from None
    finally:
        engine.dispose()
    say(f"{len(statements)} grant statement(s) applied to {role}")
