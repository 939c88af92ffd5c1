"""``bridge demo --feed hl7``: the demo fed by HL7 v2 over MLLP instead of FHIR Subscriptions.

The service's MLLP listener (:mod:`adapter.hl7.runner`) runs on a free loopback port; the demo sends
the synthetic world's SIU^S12 and ORU^R01 messages (:mod:`adapter.demo.hl7_world`) to it with the
real MLLP client (:class:`ehr.hl7.client.MllpClient`) and prints each ACK. A patient's tap goes back
as HL7 too: an SRM^S03 (HL7 v2.5.1 10.4) to :class:`SchedulingSystem`, a small MLLP receiver the demo
runs in place of the hospital's scheduling system, which records it and answers ``AA``. (A hospital
whose EHR also has a FHIR API can write taps there instead: ``hl7_patient_source=fhir`` and
``hl7_writeback_via_fhir``.)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from adapter.demo.sandbox_ehr import free_port
from adapter.demo.stack import DemoStack, demo_engine, texts_to, wait_for
from adapter.demo.walkthroughs import tap_confirmar
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import transaction
from ehr.hl7.ack import build_ack, read_header
from ehr.hl7.client import Ack, MllpClient
from ehr.hl7.mllp import Frame, FrameDecoder, frame
from mappings.conversation import Conversation


class SchedulingSystem:
    """An MLLP receiver on a free loopback port, in its own thread: keeps each message and answers AA."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="demo-scheduling", daemon=True)

    def start(self) -> SchedulingSystem:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the demo's scheduling system did not start")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for event in decoder.feed(data):
                    if isinstance(event, Frame):
                        text = event.payload.decode("utf-8", "replace")
                        self.received.append(text)
                        writer.write(frame(build_ack(read_header(text), "AA")))
                        await writer.drain()
        finally:
            writer.close()


def opt_in(stack: DemoStack, made: dict[str, dict[str, Any]]) -> None:
    """Staff opt the two patients in under ``Patient/<MRN>``, what an HL7 patient is known by."""
    with transaction(demo_engine(stack)) as session:
        for key in ("patient_en", "patient_es"):
            set_consent(session, f"Patient/{made[key]['id']}", OPTED_IN, "admin")


def send_all(stack: DemoStack, messages: list[str]) -> list[Ack]:
    """Sends the messages in order on one MLLP connection, as an interface engine does; their ACKs."""
    async def run() -> list[Ack]:
        async with MllpClient("127.0.0.1", stack.settings.hl7_listen_port, ack_timeout=15) as client:
            return [await client.send(message) for message in messages]
    return asyncio.run(run())


def ack_line(message: str, ack: Ack) -> str:
    kind = message.split("\r", 1)[0].split("|")[8].rsplit("^", 1)[0] if message.count("|") > 8 else "?"
    reason = f" ({ack.error_message or ack.text})" if ack.code != "AA" and (ack.error_message or ack.text) else ""
    return f"  {kind:<8} MSH-10 {ack.control_id:<16} → ACK {ack.code}{reason}"


def save_messages(workdir: Path, messages: list[str]) -> Path:
    """The demo's messages in a file (one per MSH, newline-separated), for ``bridge hl7 send``."""
    path = workdir / "demo-messages.hl7"
    path.write_text("\n\n".join(m.replace("\r", "\n").strip() for m in messages) + "\n", encoding="utf-8")
    return path


def srm_confirm_walkthrough(stack: DemoStack, made: dict[str, dict[str, Any]], messages: list[dict[str, Any]],
                            scheduling: SchedulingSystem) -> str:
    """The Spanish patient taps Confirmar: an SRM^S03 reaches the scheduling system and is acknowledged."""
    digits = tap_confirmar(stack, made, messages)
    requests = wait_for(lambda: [m for m in scheduling.received if "|SRM^S03^" in m], 30,
                        "the SRM^S03 at the scheduling system")
    arq = next(segment for segment in requests[0].split("\r") if segment.startswith("ARQ|"))
    expected = Conversation.load().text("confirmed", "es", "en_US")[0]
    wait_for(lambda: expected in texts_to(stack, digits), 20, "the reply")
    has_pid = any(segment.startswith("PID") for segment in requests[0].split("\r"))
    return (f"Patient tapped Confirmar → SRM^S03 (request modification: confirmed) sent over MLLP to the scheduling "
            f"system at 127.0.0.1:{scheduling.port}, acknowledged AA; it names the appointment ({arq}) and "
            f"{'carries a PID segment' if has_pid else 'nothing about the patient (no PID)'}; the reply:\n  {expected}")
