"""Compares the two maintained Python HL7 v2 parsers, ``hl7`` (python-hl7) and ``hl7apy``, on real samples.

For each library: how many of the public samples in tests/fixtures/hl7/ (and a few real-world quirks:
a v2.9 or missing MSH-12, v2.7's fifth encoding character, Z-segments) parse and yield the fields
the bridge reads (MSH-10, PID-3, SCH-2 or OBR-25), and how many messages per CPU-second it parses
and reads (CPU time, so other load on the machine matters less). The service needs only ``hl7``;
install ``hl7apy`` too to run this (``pip install hl7apy``).

    python bench/hl7_library_choice.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hl7"
_QUIRK = "MSH|{enc}|APP|FAC|RCV|RFAC|20260101120000||SIU^S12|C1|P|{ver}\rSCH|P1|F1\rPID|1||SYN1^^^HOSP^MR\r{z}"
QUIRKS = {
    "v2.9": _QUIRK.format(enc="^~\\&", ver="2.9", z=""),
    "no MSH-12": _QUIRK.format(enc="^~\\&", ver="", z=""),
    "v2.7 truncation char": _QUIRK.format(enc="^~\\&#", ver="2.7", z=""),
    "Z-segment": _QUIRK.format(enc="^~\\&", ver="2.5.1", z="ZPS|1|x"),
}


def _normalise(text: str) -> str:
    # Both libraries want CR-separated segments; files and some senders use LF or CRLF.
    return re.sub(r"\r\n|\n|\r", "\r", text.strip())


def read_with_hl7(text: str) -> tuple[str, ...]:
    msg = hl7.parse(text)
    names = {str(segment[0]) for segment in msg}
    key = str(msg.segment("SCH")[2]) if "SCH" in names else str(msg.segment("OBR")[25])
    return str(msg.segment("MSH")[10]), str(msg.segment("PID")[3]), key


def read_with_hl7apy(text: str) -> tuple[str, ...]:
    msg = parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    names = {segment.name for segment in msg.children}
    key = msg.sch.sch_2.value if "SCH" in names else msg.obr.obr_25.value
    return msg.msh.msh_10.value, msg.pid.pid_3.value, key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent parsing per library")
    args = parser.parse_args()
    paths = sorted(FIXTURES.glob("*/*.hl7"))
    samples = {str(p.relative_to(FIXTURES)): _normalise(p.read_text("latin-1")) for p in paths}
    readers: dict[str, Callable[[str], tuple[str, ...]]] = {"hl7": read_with_hl7, "hl7apy": read_with_hl7apy}
    print(f"{len(samples)} public samples, {len(QUIRKS)} real-world quirks; load average {os.getloadavg()[0]:.1f}"
          f" on {os.cpu_count()} CPUs")
    for name, read in readers.items():
        failures = []
        for label, text in {**samples, **QUIRKS}.items():
            try:
                read(text)
            except Exception as exc:
                failures.append(f"{label}: {type(exc).__name__}")
        good = [t for t in samples.values() if _parses(read, t)]
        # CPU time of this process, not wall time: the figures hold on a machine shared with other work.
        count, started = 0, time.process_time()
        while time.process_time() - started < args.seconds:
            for text in good:
                read(text)
            count += len(good)
        rate = count / (time.process_time() - started)
        ok = len(samples) + len(QUIRKS) - len(failures)
        print(f"{name:7} parsed {ok}/{len(samples) + len(QUIRKS)}; {rate:,.0f} messages per CPU-second parsed and read")
        for failure in failures:
            print(f"         failed {failure}")


def _parses(read: Callable[[str], tuple[str, ...]], text: str) -> bool:
    try:
        read(text)
    except Exception:
        return False
    return True


if __name__ == "__main__":
    main()
