"""Fixtures of the HL7 v2 tests: the public samples, synthetic messages, an in-memory store port and
a real MLLP listener on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ehr.hl7.config import Hl7Config, load_config
from ehr.hl7.events import ParsedMessage
from ehr.hl7.listener import MllpListener
from ehr.hl7.ports import StoreResult

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
# The Corepoint sample (v2.3) carries its appointment id in SCH-1 and has no SCH-2: a facility override.
CONFIG = {"facilities": {"CTX": {"filler_id": "SCH-1", "placer_id": "SCH-2"}}}
PHONE = "+12015550123"  # a valid-looking number in the 555-01xx range reserved for fiction


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_names(source: str) -> list[str]:
    return sorted(f"{source}/{p.name}" for p in (SAMPLES / source).glob("*.hl7"))


def siu(trigger: str = "S12", *, control_id: str = "SYN-1", filler: str = "APT-1", sent: str = "20261201090000",
        start: str = "20261215103000", pid: bool = True, facility: str = "SYNFAC",
        phones: str = f"^PRN^PH^^^201^5550199~^ORN^CP^^^^^^^^^{PHONE}", status: str = "Booked") -> str:
    """A synthetic SIU message (v2.5.1 layout: SCH, TQ1, PID, RGS, AIS, AIL), CR-terminated."""
    segments = [
        f"MSH|^~\\&|SYNSCHED|{facility}|BRIDGE|BRIDGEFAC|{sent}||SIU^{trigger}^SIU_S12|{control_id}|P|2.5.1",
        f"SCH|PL-{filler}|{filler}||||ROUTINE|||30|MIN|^^^{start}||||||||||||||{status}",
        f"TQ1|1||||||{start}",
    ]
    if pid:
        segments.append(f"PID|1||SYN-MRN-7^^^SYNHOSP&1.2.3.4&ISO^MR||SYNTHETIC^PATIENT||19700101|U|||"
                        f"1 Example Street^^Springfield^ZZ^00000||{phones}||spa")
    segments += ["RGS|1", f"AIS|1||CHECKUP^Check-up^L|{start}|||30|MIN", "AIL|1||CLINIC-A^ROOM-3^^NORTH CAMPUS"]
    return "\r".join(segments) + "\r"


def oru(status: str = "F", *, control_id: str = "SYN-ORU-1", filler: str = "RPT-1", pid: bool = True) -> str:
    segments = [f"MSH|^~\\&|SYNLAB|SYNLABFAC|BRIDGE|BRIDGEFAC|20261201090000||ORU^R01^ORU_R01|{control_id}|P|2.5.1"]
    if pid:
        segments.append("PID|1||SYN-MRN-7^^^SYNHOSP&1.2.3.4&ISO^MR||SYNTHETIC^PATIENT")
    segments += [f"OBR|1|PLC-{filler}|{filler}^SYNLAB|SYN-TEST^Synthetic panel^L|||20261201080000|||||||||||||||"
                 f"20261201085900|||{status}",
                 "OBX|1|ST|SYN-TEST^Synthetic panel^L||SECRET-RESULT-VALUE||||||F"]
    return "\r".join(segments) + "\r"


class FakeStore:
    """The storage port in memory: dedupes on (facility, MSH-10); can fail the next N calls or be slow."""

    def __init__(self) -> None:
        self.messages: dict[tuple[str, str], ParsedMessage] = {}
        self.calls = 0
        self.fail_next = 0
        self.raise_next = 0
        self.delay = 0.0

    async def store(self, message: ParsedMessage) -> StoreResult:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raise_next:
            self.raise_next -= 1
            raise ConnectionError("database unreachable")
        if self.fail_next:
            self.fail_next -= 1
            return StoreResult.FAILED
        if message.dedupe_key in self.messages:
            return StoreResult.DUPLICATE
        self.messages[message.dedupe_key] = message
        return StoreResult.STORED


@pytest.fixture
def config() -> Hl7Config:
    return load_config(CONFIG)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest_asyncio.fixture
async def listener(store: FakeStore, config: Hl7Config) -> AsyncIterator[MllpListener]:
    async with MllpListener(store, config, host="127.0.0.1", port=0, store_timeout=2.0) as server:
        yield server
