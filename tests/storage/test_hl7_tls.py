"""MLLP inside TLS as configured (``hl7_tls_cert_file``/``hl7_tls_key_file``): the listener of
``bridge serve`` takes ``bridge hl7 send --tls`` and stores through the real store (SQLite)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from adapter.cli.hl7 import hl7_app
from adapter.demo.sandbox_ehr import free_port
from adapter.feeds.hl7_store import Hl7MessageStore
from adapter.hl7.runner import tls_context
from adapter.security.crypto import FieldCipher
from adapter.settings import SettingsError, load_settings
from adapter.storage.db import make_engine, upgrade
from ehr.hl7.config import load_config
from ehr.hl7.listener import MllpListener
from tests.ehr.hl7.conftest import siu


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_bridge_hl7_send_over_tls_to_the_configured_listener(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = load_settings(mode="demo", hl7_enabled=True, hl7_tls_cert_file=str(cert), hl7_tls_key_file=str(key))
    engine = make_engine(f"sqlite:///{tmp_path / 'bridge.db'}")
    upgrade(engine)
    port, loop, stop = free_port(), asyncio.new_event_loop(), threading.Event()
    listening = threading.Event()

    async def serve() -> None:
        store = Hl7MessageStore(engine, FieldCipher(os.urandom(32)))
        async with MllpListener(store, load_config({}), host="127.0.0.1", port=port,
                                ssl_context=tls_context(settings)):
            listening.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert listening.wait(10)
        (tmp_path / "one.hl7").write_text(siu("S12", control_id="TLS-1"), encoding="utf-8")
        args = ["send", str(tmp_path / "one.hl7"), "--host", "localhost", "--port", str(port)]
        trusted = CliRunner().invoke(hl7_app, [*args, "--tls", "--ca-file", str(cert)])
        assert trusted.exit_code == 0 and trusted.output.strip().split("\t") == ["TLS-1", "AA"]
        untrusted = CliRunner().invoke(hl7_app, [*args, "--tls"])  # the system CAs do not know this certificate
        assert untrusted.exit_code == 1 and "failed" in untrusted.output
    finally:
        stop.set()
        thread.join(10)
        engine.dispose()


def test_a_certificate_without_its_key_is_refused_at_start_up(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(SettingsError, match="hl7_tls_cert_file and hl7_tls_key_file go together"):
        load_settings(mode="demo", hl7_enabled=True, hl7_tls_cert_file=str(cert))
