"""``bridge hl7 send FILE`` and ``bridge hl7 dead list|retry``.

``send`` sends the HL7 v2 messages of a file over MLLP, one at a time on one
connection as MLLP senders do (:class:`ehr.hl7.client.MllpClient`), and prints each one's ACK:
MSH-10, the MSA-1 code (``AA``/``AE``/``AR``) and its text or ERR reason. For testing a listener,
the service's own (``hl7_listen_host``/``hl7_listen_port``) by default. Exits 1 unless every
message got ``AA``. ``dead`` lists the stored messages that could not be processed and queues one
again (:mod:`adapter.hl7.dead`).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Annotated

import typer

from adapter.cli.support import fail, migrated_engine, operator, say, settings_or_exit
from ehr.hl7.client import Ack, MllpClient, MllpClientError, split_messages

hl7_app = typer.Typer(help="HL7 v2 over MLLP: send test messages; dead messages.", no_args_is_help=True)
dead_app = typer.Typer(help="Stored HL7 messages that could not be processed.", no_args_is_help=True)
hl7_app.add_typer(dead_app, name="dead")


@hl7_app.callback()
def _group() -> None:
    """HL7 v2 over MLLP: send test messages; dead messages."""


@hl7_app.command("send")
def send(
    file: Annotated[Path, typer.Argument(help="File of one or more HL7 v2 messages (each starts with MSH).",
                                         exists=True, dir_okay=False, readable=True)],
    host: Annotated[str | None, typer.Option(help="Listener host (default: the hl7_listen_host setting).")] = None,
    port: Annotated[int | None, typer.Option(help="Listener port (default: the hl7_listen_port setting).")] = None,
    tls: Annotated[bool, typer.Option("--tls", help="MLLP inside TLS, verifying the listener's certificate.")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle that signed the listener's certificate.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK.")] = 30.0,
) -> None:
    """Sends each message of FILE and prints its ACK code."""
    messages = split_messages(file.read_text(encoding="utf-8", errors="replace"))
    if not messages:
        raise fail(f"{file}: no HL7 message (no line starts with MSH)")
    if host is None or port is None:
        settings = settings_or_exit()
        host = host or settings.hl7_listen_host
        port = port or settings.hl7_listen_port
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None) if tls else None
    try:
        accepted = asyncio.run(_send_all(messages, host, port, context, timeout))
    except MllpClientError as error:
        raise fail(f"sending to {host}:{port} failed: {error}") from None
    if not accepted:
        raise typer.Exit(1)


def _print(ack: Ack) -> None:
    reason = ack.error_message or ack.text
    say(f"{ack.control_id}\t{ack.code}" + (f"\t{reason}" if reason else ""))


async def _send_all(messages: list[str], host: str, port: int, context: ssl.SSLContext | None,
                    ack_seconds: float) -> bool:
    """Prints each ACK as it comes (an interrupted run still shows what was acknowledged)."""
    accepted = True
    async with MllpClient(host, port, ssl_context=context, server_hostname=host if context else None,
                          connect_timeout=ack_seconds, ack_timeout=ack_seconds) as client:
        for message in messages:
            ack = await client.send(message)
            _print(ack)
            accepted = accepted and ack.accepted
    return accepted


@dead_app.command("list")
def dead_list(limit: Annotated[int, typer.Option(help="How many, oldest first.")] = 100) -> None:
    """Dead messages: id, received, facility, type, MSH-10, attempts, error, whether the text is kept."""
    from adapter.hl7.dead import dead_messages

    for row in dead_messages(migrated_engine(settings_or_exit()), limit):
        kept = "text kept" if row.raw_enc else "text purged (cannot be retried)"
        say(f"{row.id}\t{row.received_at:%Y-%m-%d %H:%M:%S}\t{row.facility}\t{row.message_type}^{row.trigger}\t"
            f"{row.control_id}\t{row.attempts} attempts\t{row.last_error or '-'}\t{kept}")


@dead_app.command("retry")
def dead_retry(message_id: Annotated[int, typer.Argument(help="The message's id (see `list`).")]) -> None:
    """Queue a dead message again, after fixing its cause (mapping file, key); closes its alert."""
    from adapter.hl7.dead import redrive

    answer = redrive(migrated_engine(settings_or_exit()), message_id, agent=operator())
    say(answer)
    if not answer.endswith("queued again"):
        raise typer.Exit(1)
