"""A tap on an HL7-fed appointment reaches the scheduling system by the configured path: an SRM^S03
(confirmation) or SRM^S04 (cancellation) over real MLLP to a scheduling system on loopback, which
acknowledges it; a refusal (``AE``) is retried with the same MSH-10 until it is accepted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from adapter.demo.sandbox_ehr import free_port
from adapter.demo.stack import DemoStack, start_stack, wait_for
from ehr.hl7.ack import build_ack, read_header
from ehr.hl7.mllp import Frame, FrameDecoder, frame
from tests.integration.test_conversation_e2e import buttons, tap, texts_to
from tests.integration.test_hl7_feed import opted_in, send, siu, start_in
from tests.support.e2e import sent_to

pytestmark = pytest.mark.fhir


class SchedulingSystem:
    """An MLLP receiver that records each message and answers AA (or AE for the first ``refuse`` ones)."""

    def __init__(self, refuse: int = 0) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.refuse = refuse
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for event in decoder.feed(data):
                if isinstance(event, Frame):
                    text = event.payload.decode()
                    self.received.append(text)
                    code = "AE" if self.refuse > 0 else "AA"
                    self.refuse -= 1
                    writer.write(frame(build_ack(read_header(text), code)))
                    await writer.drain()
        writer.close()

    def __enter__(self) -> SchedulingSystem:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def scheduling() -> Iterator[SchedulingSystem]:
    with SchedulingSystem(refuse=1) as system:
        yield system


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, scheduling: SchedulingSystem) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("hl7-srm"), consent_source="registry", hl7_enabled=True,
                        hl7_listen_port=free_port(), hl7_srm_host="127.0.0.1", hl7_srm_port=scheduling.port,
                        dispatch_backoff_seconds=0.2, whatsapp_pair_interval_seconds=1.0)
    yield stack
    stack.stop()


def srm(scheduling: SchedulingSystem, trigger: str, filler: str) -> list[str]:
    return [m for m in scheduling.received if f"|SRM^{trigger}^SRM_S01|" in m and f"ARQ|PL-{filler}^SYNFAC|"
            f"{filler}^SYNFAC" in m]


def test_confirm_and_cancel_taps_become_acknowledged_srm_requests(stack: DemoStack,
                                                                  scheduling: SchedulingSystem) -> None:
    first, second = opted_in(stack), opted_in(stack)
    assert [a.code for a in send(stack, siu("S12", first, "APT-SRM-1", start_in(5)),
                                 siu("S12", second, "APT-SRM-2", start_in(5)))] == ["AA", "AA"]
    confirmation = wait_for(lambda: sent_to(stack, first), 20, "the first confirmation")[0]
    confirm = buttons(confirmation)[0]
    tap(stack, first, confirm)
    # The first SRM gets AE: it is sent again (same MSH-10) and then acknowledged.
    wait_for(lambda: len(srm(scheduling, "S03", "APT-SRM-1")) == 2, 30, "the SRM^S03 and its resend")
    once, again = srm(scheduling, "S03", "APT-SRM-1")
    assert read_header(once).control_id == read_header(again).control_id
    assert "PID" not in once  # the request names the appointment, nothing about the patient
    wait_for(lambda: any("confirmed" in text for text in texts_to(stack, first)), 20, "the patient's answer")
    _, _, cancel, _ = buttons(wait_for(lambda: sent_to(stack, second), 20, "the second confirmation")[0])
    tap(stack, second, cancel)
    [question] = wait_for(lambda: [m for m in sent_to(stack, second) if m["type"] == "interactive"], 20,
                          "are you sure?")
    tap(stack, second, buttons(question)[0], kind="button_reply")
    wait_for(lambda: srm(scheduling, "S04", "APT-SRM-2"), 20, "the SRM^S04")
    wait_for(lambda: any("cancelled" in text for text in texts_to(stack, second)), 20, "the patient's answer")
