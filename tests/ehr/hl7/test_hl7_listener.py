"""The MLLP listener and client over real loopback sockets (and TLS), with the in-memory store port."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ehr.hl7.client import Ack, MllpClient, MllpConnectError, MllpTimeoutError, parse_ack, send_message
from ehr.hl7.config import Hl7Config
from ehr.hl7.listener import MllpListener
from ehr.hl7.messages import parse_message
from ehr.hl7.mllp import Frame, FrameDecoder, frame
from tests.ehr.hl7.conftest import FakeStore, oru, sample, sample_names, siu


async def _raw_exchange(port: int, data: bytes, acks: int, *, chunk: int | None = None,
                        close_write: bool = False) -> list[Ack]:
    """Writes ``data`` (in ``chunk``-byte pieces when given) and reads ``acks`` ACK frames, 5 s at most."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        if close_write:
            writer.write_eof()
        decoder, out = FrameDecoder(), []
        async with asyncio.timeout(5):
            while len(out) < acks:
                received = await reader.read(65536)
                if not received:
                    break
                out += [parse_ack(e.payload) for e in decoder.feed(received) if isinstance(e, Frame)]
        return out
    finally:
        writer.close()


@pytest.mark.parametrize("source", ["fhir-converter", "node-hl7-complete"])
async def test_public_samples_of_each_source_are_stored_then_accepted(source: str, listener: MllpListener,
                                                                      store: FakeStore, config: Hl7Config) -> None:
    names = sample_names(source)
    expected = {parse_message(sample(name), config).dedupe_key for name in names}
    async with MllpClient("127.0.0.1", listener.port) as client:
        for name in names:
            ack = await client.send(sample(name))
            assert ack.code == "AA", (name, ack.error_message)
    # The FHIR-Converter set reuses MSH-10 MSG00012 for its two S12 samples: the second is a duplicate.
    assert set(store.messages) == expected and store.calls == len(names)
    assert len(expected) == len(names) - (source == "fhir-converter")


async def test_truncated_frame_gets_ar_and_stores_nothing(listener: MllpListener, store: FakeStore) -> None:
    text = siu(control_id="CUT-1")
    cut = text[: text.index("PID") + 20].encode()  # MSH and SCH whole, PID cut short
    [rejected, accepted] = await _raw_exchange(listener.port, b"\x0b" + cut + frame(siu(control_id="OK-1")), 2)
    assert (rejected.code, rejected.control_id, rejected.error_code) == ("AR", "CUT-1", "100")
    assert "end block" in rejected.error_message
    assert (accepted.code, accepted.control_id) == ("AA", "OK-1")
    assert [key[1] for key in store.messages] == ["OK-1"]
    # A stream that ends mid-frame is answered too, then closed.
    [at_eof] = await _raw_exchange(listener.port, b"\x0b" + cut, 1, close_write=True)
    assert (at_eof.code, at_eof.control_id) == ("AR", "CUT-1")
    assert store.calls == 1


async def test_message_without_pid_gets_ar_with_err_and_stores_nothing(listener: MllpListener,
                                                                      store: FakeStore) -> None:
    ack = await send_message(siu(pid=False, control_id="NOPID-1"), "127.0.0.1", listener.port)
    assert (ack.code, ack.control_id, ack.error_code, ack.error_message) == ("AR", "NOPID-1", "100", "no PID segment")
    assert store.calls == 0 and not store.messages
    ack = await send_message(oru(pid=False), "127.0.0.1", listener.port)
    assert ack.code == "AR" and store.calls == 0


async def test_store_failure_gives_ae_and_the_resend_is_stored_once(listener: MllpListener,
                                                                   store: FakeStore) -> None:
    message = siu(control_id="RETRY-1")
    store.raise_next = 1
    async with MllpClient("127.0.0.1", listener.port) as client:
        first = await client.send(message)
        assert (first.code, first.error_code) == ("AE", "207") and not store.messages
        store.fail_next = 1
        assert (await client.send(message)).code == "AE"
        assert (await client.send(message)).code == "AA"
        again = await client.send(message)
    assert (again.code, again.text) == ("AA", "duplicate: already received")
    assert list(store.messages) == [("SYNFAC", "RETRY-1")] and store.calls == 4


async def test_a_store_slower_than_its_timeout_gives_ae(store: FakeStore, config: Hl7Config) -> None:
    store.delay = 0.5
    async with MllpListener(store, config, port=0, store_timeout=0.05) as server:
        ack = await send_message(siu(control_id="SLOW-1"), "127.0.0.1", server.port)
    assert ack.code == "AE" and not store.messages


async def test_duplicate_control_id_is_acknowledged_and_reported_duplicate(listener: MllpListener,
                                                                          store: FakeStore) -> None:
    results = []
    for _ in range(2):
        results.append(await send_message(siu(control_id="DUP-1"), "127.0.0.1", listener.port))
    assert [a.code for a in results] == ["AA", "AA"] and results[1].text.startswith("duplicate")
    # The same MSH-10 from another facility is another message.
    other = await send_message(siu(control_id="DUP-1", facility="OTHERFAC"), "127.0.0.1", listener.port)
    assert other.code == "AA" and not other.text
    assert sorted(store.messages) == [("OTHERFAC", "DUP-1"), ("SYNFAC", "DUP-1")]


async def test_bytes_dribbled_one_at_a_time(listener: MllpListener, store: FakeStore) -> None:
    data = frame(siu(control_id="DRIP-1")) + frame(oru(control_id="DRIP-2"))
    acks = await _raw_exchange(listener.port, data, 2, chunk=1)
    assert [(a.code, a.control_id) for a in acks] == [("AA", "DRIP-1"), ("AA", "DRIP-2")]
    assert len(store.messages) == 2


async def test_unparseable_frame_and_garbage(listener: MllpListener, store: FakeStore) -> None:
    acks = await _raw_exchange(listener.port, b"junk\r\n" + frame(b"hello") + frame(siu(control_id="G-1")), 2)
    assert [(a.code, a.error_code) for a in acks] == [("AR", "100"), ("AA", "")]
    assert list(store.messages) == [("SYNFAC", "G-1")]


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_tls(tmp_path: Path, store: FakeStore, config: Hl7Config) -> None:
    server_context, client_context = _tls_contexts(tmp_path)
    async with MllpListener(store, config, port=0, ssl_context=server_context) as server:
        ack = await send_message(siu(control_id="TLS-1"), "127.0.0.1", server.port, ssl_context=client_context,
                                 server_hostname="localhost")
        assert ack.code == "AA" and ("SYNFAC", "TLS-1") in store.messages
        with pytest.raises(MllpConnectError):  # a client that does not trust the certificate gets nowhere
            await send_message(siu(control_id="TLS-2"), "127.0.0.1", server.port,
                               ssl_context=ssl.create_default_context(), server_hostname="localhost")
    assert ("SYNFAC", "TLS-2") not in store.messages


async def test_client_timeouts_and_refusals() -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # takes the message, never answers
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MllpTimeoutError, match="SYN-1"):
            await send_message(siu(), "127.0.0.1", port, timeout_seconds=0.2)
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    with pytest.raises(MllpConnectError):
        await send_message(siu(), "127.0.0.1", port, timeout_seconds=1)


async def test_an_idle_connection_is_closed_after_the_idle_timeout(store: FakeStore, config: Hl7Config) -> None:
    async with MllpListener(store, config, port=0, idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(5):
            assert await reader.read(100) == b""
        writer.close()
