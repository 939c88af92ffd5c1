"""``bridge keys ...``: the data and blind-index keys, rotated online by a CLI command. Shows key ids
and row counts, never key material. Every command is audited (``key-rotation``, agent
``cli:<os user>``).

Keyring mode (``BRIDGE_KEYRING_FILE``): ``rotate data|index`` generates the new key, makes it active,
keeps the old one for reading, saves the file atomically and runs the re-encryption / re-indexing;
running instances pick up the new key within seconds. Settings mode: the new key goes in the
setting, the old one into the ``_previous`` list, every instance restarts, then ``reencrypt`` /
``reindex`` runs.

On PostgreSQL the jobs run online beside any number of instances. On SQLite (one instance, whose
writers take turns inside its process) run them with the service stopped: a second writer process
makes the service's read-then-write steps fail with "database is locked".
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Literal

import typer
from sqlalchemy.engine import Engine

from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, record
from adapter.cli.progress import progress_bar
from adapter.cli.support import fail, migrated_engine, operator, say, settings_or_exit
from adapter.maintenance.key_usage import key_usage, usage_by_column
from adapter.maintenance.reencrypt import reencrypt
from adapter.maintenance.reindex import reindex
from adapter.security.crypto import KeySource
from adapter.security.keys import RECHECK_SECONDS, Keyring, KeyringError, LocalWrappingKey, key_source
from adapter.settings import Settings
from adapter.storage.db import transaction

keys_app = typer.Typer(help="Data and blind-index keys: status, rotation, re-encryption, retirement.",
                       no_args_is_help=True)
GRACE_SECONDS = 3 * RECHECK_SECONDS
BatchOption = Annotated[int, typer.Option(min=1, max=50_000, help="Rows per transaction.")]

ENV_STEPS = {
    "data": ("1. `bridge keys-new` makes a key; set it as BRIDGE_DATA_ENCRYPTION_KEY and add the old one to "
             "BRIDGE_DATA_ENCRYPTION_KEYS_PREVIOUS (JSON list).\n2. Restart every instance.\n"
             "3. Run `bridge keys reencrypt`.\n4. Once `bridge keys status` shows no row under the old key, "
             "remove it from the _PREVIOUS list."),
    "index": ("1. `bridge keys-new` makes a key; set it as BRIDGE_BLIND_INDEX_KEY and add the old one to "
              "BRIDGE_BLIND_INDEX_KEYS_PREVIOUS (JSON list).\n2. Restart every instance.\n"
              "3. Run `bridge keys reindex`.\n4. Once `bridge keys status` shows no row under the old key, "
              "remove it from the _PREVIOUS list."),
}


def _keys(settings: Settings) -> KeySource:
    try:
        return key_source(settings)
    except KeyringError as exc:
        raise fail(f"keyring: {exc}") from None


def _keyring(settings: Settings) -> Keyring:
    keys = _keys(settings)
    if not isinstance(keys, Keyring):
        raise fail("this needs a keyring file (BRIDGE_KEYRING_FILE); with key settings, rotate by configuration")
    return keys


def _audit(engine: Engine, what: str, key_id: str, outcome: Outcome = Outcome.SUCCESS) -> None:
    with transaction(engine) as session:
        record(session, AuditEntry(kind=Kind.KEY_ROTATION, action=Action.UPDATE, outcome=outcome, agent=operator(),
                                   detail={"job": what, "key_id": key_id}))


@keys_app.command("status")
def status() -> None:
    """Active and previous key ids, and how many rows each one still protects."""
    settings = settings_or_exit()
    keys, engine = _keys(settings), migrated_engine(settings)
    current = keys.current()
    say(f"source: {'keyring ' + str(settings.keyring_file) if settings.keyring_file else 'settings'}")
    say(f"data keys:  active {current.active_data}; previous "
        f"{', '.join(k for k in current.data if k != current.active_data) or '-'}")
    say(f"index keys: active {current.active_index}; previous "
        f"{', '.join(k for k in current.index if k != current.active_index) or '-'}")
    say("rows per key id:")
    say(json.dumps(usage_by_column(engine), indent=2, sort_keys=True))
    _audit(engine, "status", current.active_data)


@keys_app.command("rotate")
def rotate(kind: Literal["data", "index"], batch_size: BatchOption = 500) -> None:
    """Make a new data or index key active, then re-encrypt / re-index every row (keyring mode)."""
    settings = settings_or_exit()
    if settings.keyring_file is None:
        say(f"Keys come from settings: rotate the {kind} key in two steps.\n{ENV_STEPS[kind]}")
        raise typer.Exit(0)
    ring, engine = _keyring(settings), migrated_engine(settings)
    new_id = ring.rotate(kind)
    _audit(engine, f"rotate-{kind}", new_id)
    say(f"new active {kind} key {new_id}; the previous one still reads until the rows are rewritten")
    # Running instances look at the file every RECHECK_SECONDS: once they all write under the new key,
    # the job's passes can end with no old value left behind.
    time.sleep(GRACE_SECONDS)
    _run(engine, ring, kind, batch_size)


def _run(engine: Engine, keys: KeySource, kind: str, batch_size: int) -> None:
    if engine.dialect.name == "sqlite":
        say("SQLite: the service must be stopped while this runs (one writer process at a time)")
    job = reencrypt if kind == "data" else reindex
    with progress_bar("re-encrypting values" if kind == "data" else "re-indexing rows") as progress:
        counts = job(engine, keys, batch_size=batch_size, agent=operator(), progress=progress)
    say(json.dumps(counts, sort_keys=True))
    if counts.get("failed"):
        raise fail(f"{counts['failed']} values did not decrypt with any key held; they are left as they were")


@keys_app.command("reencrypt")
def reencrypt_command(batch_size: BatchOption = 500) -> None:
    """Rewrite every encrypted value under the active data key (online, resumable)."""
    settings = settings_or_exit()
    _run(migrated_engine(settings), _keys(settings), "data", batch_size)


@keys_app.command("reindex")
def reindex_command(batch_size: BatchOption = 500) -> None:
    """Recompute every blind index under the active index key (online, resumable)."""
    settings = settings_or_exit()
    _run(migrated_engine(settings), _keys(settings), "index", batch_size)


@keys_app.command("retire")
def retire(key_id: str) -> None:
    """Remove an old key from the keyring; refused while any row still uses it."""
    settings = settings_or_exit()
    ring, engine = _keyring(settings), migrated_engine(settings)
    in_use = key_usage(engine).get(key_id, 0)
    if in_use:
        _audit(engine, "retire", key_id, Outcome.MINOR_FAILURE)
        raise fail(f"key {key_id} still protects {in_use} rows; run `bridge keys reencrypt` / `reindex` first")
    try:
        kind = ring.retire(key_id)
    except KeyringError as exc:
        raise fail(str(exc)) from None
    _audit(engine, "retire", key_id)
    say(f"{kind} key {key_id} retired")


@keys_app.command("init-keyring")
def init_keyring() -> None:
    """Create the keyring file with one data key and one index key, wrapped by the key wrapping key."""
    settings = settings_or_exit()
    if settings.keyring_file is None:
        raise fail("set BRIDGE_KEYRING_FILE (and BRIDGE_KEY_WRAPPING_KEY or _FILE) first")
    try:
        ring = Keyring.create(settings.keyring_file, LocalWrappingKey.from_settings(settings))
    except KeyringError as exc:
        raise fail(str(exc)) from None
    keys = ring.current()
    _audit(migrated_engine(settings), "init-keyring", keys.active_data)
    say(f"created {settings.keyring_file}: data key {keys.active_data}, index key {keys.active_index}")
