"""``bridge smart ...``: SMART Backend Services set-up (https://hl7.org/fhir/smart-app-launch/backend-services.html).

``keygen`` makes the private key that signs client assertions and prints the public JWK Set to
register with the EHR; ``token`` checks the registration end to end by fetching a token and
printing only its lifetime and granted scopes, never the token.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, cast

import typer

from adapter.cli.support import fail, say, settings_or_exit
from ehr.errors import FhirError
from ehr.smart_keys import SIGNING_ALGS, SigningAlg, SmartKeyError, generate_signing_key

smart_app = typer.Typer(help="SMART Backend Services: signing key and token check.", no_args_is_help=True)


@smart_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write the private key (PEM, mode 0600).")],
    alg: Annotated[str, typer.Option("--alg", help="RS384 (RSA 3072) or ES384 (EC P-384).")] = "RS384",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Writes a new private key and prints its public JWKS (register it at the EHR)."""
    if alg not in SIGNING_ALGS:
        raise fail(f"--alg must be one of {', '.join(SIGNING_ALGS)}", 2)
    if out.exists() and not force:
        raise fail(f"{out} exists; pass --force to replace it (the EHR must then get the new JWKS)", 2)
    key = generate_signing_key(cast(SigningAlg, alg))
    out.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(out, flags, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_pem())
    out.chmod(0o600)
    say(json.dumps(key.jwks(), indent=2))
    typer.echo(f"Wrote {out} ({key.alg}, kid {key.kid}). Register the JWKS above with the EHR, then set "
               f"BRIDGE_FHIR_SMART_PRIVATE_KEY_FILE={out}", err=True)


@smart_app.command("token")
def token() -> None:
    """Fetches one access token with the configured settings; prints its expiry and scopes only."""
    from ehr.auth_settings import smart_token_source

    settings = settings_or_exit()
    try:
        source = smart_token_source(settings)
    except (SmartKeyError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    try:
        obtained = asyncio.run(source.token())
    except FhirError as exc:
        raise fail(str(exc)) from None
    expires = datetime.fromtimestamp(obtained.expires_at_epoch, UTC).isoformat(timespec="seconds")
    say(f"token obtained: expires in {obtained.expires_in:.0f} s (at {expires})")
    say(f"scopes granted: {' '.join(obtained.scopes) or '(not stated by the EHR)'}")
