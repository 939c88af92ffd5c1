"""The HL7 v2 feed end to end: real MLLP over loopback into a real `bridge serve` app (the demo stack:
sekmet-fhir, the WhatsApp emulator, the service on SQLite), each message stored before its ACK and
decided like a FHIR event. Patients are opted in in the consent registry under ``Patient/<MRN>``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from sqlmodel import Session
from typer.testing import CliRunner

from adapter.cli.hl7 import hl7_app
from adapter.demo.sandbox_ehr import free_port
from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.feeds.hl7_resources import appointment_id
from adapter.feeds.hl7_tables import Hl7Message
from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import make_engine, transaction
from ehr.hl7.client import Ack, MllpClient
from ehr.hl7.config import load_config
from ehr.hl7.messages import parse_message
from tests.support.e2e import sent_to

pytestmark = pytest.mark.fhir
_numbers = itertools.count(20)
_controls = itertools.count(1)
REMINDER_RULE = "appointment-booked-confirmation-reminder"
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
# The Corepoint sample (v2.3) carries its appointment id in SCH-1 and has no SCH-2: a facility override.
SAMPLE_MAPPING = {"facilities": {"CTX": {"filler_id": "SCH-1", "placer_id": "SCH-2"}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    workdir = tmp_path_factory.mktemp("hl7")
    (workdir / "hl7-mapping.yaml").write_text(yaml.safe_dump(SAMPLE_MAPPING), encoding="utf-8")
    stack = start_stack(workdir, consent_source="registry", hl7_enabled=True, hl7_listen_port=free_port(),
                        hl7_mapping_file=str(workdir / "hl7-mapping.yaml"), dispatch_backoff_seconds=0.2,
                        site_timezone="UTC", quiet_hours="21:00-08:00")
    yield stack
    stack.stop()


def hl7_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def siu(trigger: str, number: int, filler: str, start: datetime, *, sent: datetime | None = None,
        control: str | None = None, pid: bool = True, mrn: str | None = None, phone: bool = True) -> str:
    """A synthetic SIU message for patient SYN-<number> (or ``mrn``) with mobile +1 201-555-01<number>."""
    sent = sent or datetime.now(UTC)
    control = control or f"SYN-{next(_controls)}"
    when = hl7_time(start)
    segments = [f"MSH|^~\\&|SYNSCHED|SYNFAC|BRIDGE|BRIDGEFAC|{hl7_time(sent)}||SIU^{trigger}^SIU_S12|{control}|P|2.5.1",
                f"SCH|PL-{filler}|{filler}||||ROUTINE|||30|MIN|^^^{when}||||||||||||||Booked",
                f"TQ1|1||||||{when}"]
    if pid:
        phones = f"^PRN^CP^^^^^^^^^+120155501{number:02d}" if phone else ""
        segments.append(f"PID|1||{mrn or f'SYN-{number}'}^^^SYNHOSP&1.2.3.4&ISO^MR||SYNTHETIC^PATIENT||19700101|U|||"
                        f"1 Example Street^^Springfield^ZZ^00000||{phones}||eng")
    segments += ["RGS|1", f"AIS|1||CHECKUP^Check-up^L|{when}|||30|MIN", "AIL|1||CLINIC-A^ROOM-3^^NORTH CAMPUS"]
    return "\r".join(segments) + "\r"


def opted_in(stack: DemoStack) -> int:
    number = next(_numbers)
    with transaction(make_engine(stack.settings.database_url)) as session:
        set_consent(session, f"Patient/SYN-{number}", OPTED_IN, "admin")
    return number


def send(stack: DemoStack, *messages: str) -> list[Ack]:
    async def run() -> list[Ack]:
        async with MllpClient("127.0.0.1", stack.settings.hl7_listen_port, ack_timeout=15) as client:
            return [await client.send(message) for message in messages]
    return asyncio.run(run())


def stored(stack: DemoStack) -> int:
    with Session(make_engine(stack.settings.database_url)) as session:
        return int(session.execute(select(func.count()).select_from(Hl7Message)).scalar_one())


def reminders(stack: DemoStack, filler: str) -> list[OutboxMessage]:
    ref = f"Appointment/{appointment_id('SYNFAC', filler)}"
    with Session(make_engine(stack.settings.database_url)) as session:
        return list(session.execute(select(OutboxMessage).where(
            OutboxMessage.rule_id == REMINDER_RULE, OutboxMessage.resource_ref == ref)).scalars())


def start_in(days: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=10, minute=0, second=0, microsecond=0)


def test_an_s12_for_a_consented_patient_becomes_one_confirmation(stack: DemoStack) -> None:
    number = opted_in(stack)
    [ack] = send(stack, siu("S12", number, "APT-S12", start_in(5)))
    assert ack.code == "AA"
    wait_for(lambda: sent_to(stack, number), 20, "the confirmation")
    assert len(sent_to(stack, number)) == 1


def settled(stack: DemoStack) -> bool:
    """Every stored message processed (done, stale or dead) and the outbox's sends done."""
    with Session(make_engine(stack.settings.database_url)) as session:
        pending = session.execute(select(func.count()).select_from(Hl7Message)
                                  .where(Hl7Message.state == "pending")).scalar_one()
        sending = session.execute(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.state.in_(["queued", "sending"]), OutboxMessage.rule_id != REMINDER_RULE)).scalar_one()
    return pending == 0 and sending == 0


def queued_keys(stack: DemoStack, filler: str) -> set[str]:
    return {row.natural_key for row in reminders(stack, filler) if row.state == "queued"}


def test_s13_moves_the_reminders_and_s15_s17_cancel_them(stack: DemoStack) -> None:
    first, second = opted_in(stack), opted_in(stack)
    start, later = start_in(5), start_in(8)
    assert {a.code for a in send(stack, siu("S12", first, "APT-MOVE", start),
                                 siu("S12", second, "APT-GONE", start))} == {"AA"}
    wait_for(lambda: len(queued_keys(stack, "APT-MOVE")) == 2 and len(queued_keys(stack, "APT-GONE")) == 2, 20,
             "the reminders")
    assert all(start.strftime("%Y%m%dT%H%MZ") in key for key in queued_keys(stack, "APT-MOVE"))
    [moved] = send(stack, siu("S13", first, "APT-MOVE", later))
    assert moved.code == "AA"
    wait_for(lambda: (keys := queued_keys(stack, "APT-MOVE")) and all(
        later.strftime("%Y%m%dT%H%MZ") in key for key in keys), 20, "the reminders to move")
    assert len(queued_keys(stack, "APT-MOVE")) == 2
    for trigger, filler in (("S15", "APT-GONE"), ("S17", "APT-MOVE")):
        [ack] = send(stack, siu(trigger, first if filler == "APT-MOVE" else second, filler, later))
        assert ack.code == "AA"
    wait_for(lambda: not queued_keys(stack, "APT-GONE") and not queued_keys(stack, "APT-MOVE"), 20,
             "the reminders to be cancelled")
    wait_for(lambda: settled(stack), 20, "processing")
    assert len(sent_to(stack, first)) == 1 and len(sent_to(stack, second)) == 1  # the confirmations only


def test_s26_a_duplicate_and_a_late_resend_send_nothing(stack: DemoStack) -> None:
    number = opted_in(stack)
    booking = siu("S12", number, "APT-DUP", start_in(4), sent=datetime.now(UTC) - timedelta(minutes=5))
    assert [a.code for a in send(stack, booking)] == ["AA"]
    wait_for(lambda: sent_to(stack, number), 20, "the confirmation")
    before = stored(stack)
    [again] = send(stack, booking)  # the engine resends the same MSH-10
    assert again.code == "AA" and "duplicate" in again.text and stored(stack) == before
    [noshow] = send(stack, siu("S26", number, "APT-DUP", start_in(4)))
    # An S12 sent before the S26 but arriving after it (another MSH-10): stored, acknowledged, not applied.
    [late] = send(stack, siu("S12", number, "APT-DUP", start_in(4), sent=datetime.now(UTC) - timedelta(minutes=1)))
    assert noshow.code == late.code == "AA" and stored(stack) == before + 2
    wait_for(lambda: settled(stack), 20, "processing")
    with Session(make_engine(stack.settings.database_url)) as session:
        states = list(session.execute(select(Hl7Message.state).order_by(Hl7Message.id.desc()).limit(2)).scalars())
    assert states == ["stale", "done"]
    assert len(sent_to(stack, number)) == 1


def test_a_truncated_frame_or_no_pid_gets_ar_and_stores_nothing(stack: DemoStack) -> None:
    number = opted_in(stack)
    before = stored(stack)
    [no_pid] = send(stack, siu("S12", number, "APT-NOPID", start_in(3), pid=False))
    assert no_pid.code == "AR" and no_pid.error_code == "100" and "PID" in no_pid.raw

    async def truncated() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.hl7_listen_port)
        writer.write(b"\x0b" + siu("S12", number, "APT-CUT", start_in(3)).encode()[:120])
        writer.write_eof()  # the frame never gets its end block
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    answer = asyncio.run(truncated())
    assert b"MSA|AR|" in answer and b"ERR|" in answer
    assert stored(stack) == before
    assert sent_to(stack, number) == []


def test_public_samples_of_two_sources_are_acknowledged_stored_and_processed(stack: DemoStack) -> None:
    files = sorted(SAMPLES.glob("*/*.hl7"))
    assert {path.parent.name for path in files} == {"fhir-converter", "node-hl7-complete"}
    before = stored(stack)
    acks = send(stack, *(path.read_text(encoding="utf-8") for path in files))
    assert [ack.code for ack in acks] == ["AA"] * len(files)
    config = load_config(SAMPLE_MAPPING)
    distinct = {parse_message(path.read_bytes(), config).dedupe_key for path in files}
    assert stored(stack) == before + len(distinct)  # samples that share a sender and MSH-10 are one message
    wait_for(lambda: settled(stack), 30, "processing")
    with Session(make_engine(stack.settings.database_url)) as session:
        states = set(session.execute(select(Hl7Message.state)).scalars())
    assert states <= {"done", "stale"}


def test_bridge_hl7_send_prints_each_ack(stack: DemoStack, tmp_path: Path) -> None:
    number = opted_in(stack)
    file = tmp_path / "two.hl7"
    good, bad = siu("S12", number, "APT-CLI", start_in(6)), siu("S12", number, "APT-CLI-2", start_in(6), pid=False)
    file.write_text((good + "\n" + bad).replace("\r", "\n"), encoding="utf-8")  # a file as an editor saves it
    result = CliRunner().invoke(hl7_app, ["send", str(file), "--host", "127.0.0.1",
                                          "--port", str(stack.settings.hl7_listen_port)])
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert [line[1] for line in lines] == ["AA", "AR"] and result.exit_code == 1
    assert "PID" in lines[1][2]
    wait_for(lambda: sent_to(stack, number), 20, "the confirmation")


def oru(number: int, filler: str, status: str) -> str:
    """A synthetic ORU^R01 for patient SYN-<number>; the OBX value must never reach a message."""
    return "\r".join([
        f"MSH|^~\\&|SYNLAB|SYNFAC|BRIDGE|BRIDGEFAC|{hl7_time(datetime.now(UTC))}||ORU^R01^ORU_R01|"
        f"SYN-{next(_controls)}|P|2.5.1",
        f"PID|1||SYN-{number}^^^SYNHOSP&1.2.3.4&ISO^MR||SYNTHETIC^PATIENT||||||||^PRN^CP^^^^^^^^^+120155501{number:02d}",
        f"OBR|1|PLC-{filler}|{filler}^SYNLAB|SYN-TEST^Synthetic panel^L|||20261201080000|||||||||||||||"
        f"20261201085900|||{status}",
        "OBX|1|ST|SYN-TEST^Synthetic panel^L||SECRET-RESULT-VALUE||||||F"]) + "\r"


def test_a_final_oru_tells_the_patient_results_are_ready_and_a_preliminary_one_does_not(stack: DemoStack) -> None:
    ready, waiting = opted_in(stack), opted_in(stack)
    acks = send(stack, oru(ready, "RPT-F", "F"), oru(waiting, "RPT-P", "P"))
    assert [ack.code for ack in acks] == ["AA", "AA"]
    [message] = wait_for(lambda: sent_to(stack, ready), 20, "the results-ready message")
    assert "SECRET-RESULT-VALUE" not in str(message)
    wait_for(lambda: settled(stack), 20, "processing")
    assert sent_to(stack, waiting) == []


def test_a_patient_not_opted_in_gets_nothing(stack: DemoStack) -> None:
    number = next(_numbers)  # no consent record under Patient/SYN-<number>
    [ack] = send(stack, siu("S12", number, "APT-NO-CONSENT", start_in(5)))
    assert ack.code == "AA"
    wait_for(lambda: settled(stack), 20, "processing")
    with Session(make_engine(stack.settings.database_url)) as session:
        reasons = set(session.execute(select(NotificationSkip.reason).where(
            NotificationSkip.patient_ref == f"Patient/SYN-{number}")).scalars())
    assert reasons == {"no_opt_in"} and sent_to(stack, number) == []
