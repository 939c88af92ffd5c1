"""`bridge demo --feed hl7`: the same demo fed by HL7 v2 over real MLLP instead of FHIR Subscriptions;
each message acknowledged AA, the same three messages and no PHI, the tap sent back as SRM^S03."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.demo.run import run_demo
from ehr.hl7.client import split_messages

pytestmark = pytest.mark.fhir


def test_demo_fed_by_hl7_shows_acks_three_messages_no_phi_and_an_srm(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(lines.append, keep_running=False, workdir=tmp_path, feed="hl7") == 0
    text = "\n".join(lines)
    assert "HL7 v2 listener:   127.0.0.1:" in text and "bridge hl7 send " in text
    assert text.count("SIU^S12  MSH-10 DEMO-SIU-") == 3 and text.count("ORU^R01  MSH-10 DEMO-ORU-") == 2
    assert text.count("→ ACK AA") == 5 and "ACK AE" not in text and "ACK AR" not in text
    assert len(split_messages((tmp_path / "demo-messages.hl7").read_text(encoding="utf-8"))) == 5
    assert text.count("template appointment_confirmation") == 2 and "template results_ready" in text
    assert "PHI check: 0 of" in text and ": no_opt_in" in text
    assert "POST (the patient's tap) → 303" in text
    assert "SRM^S03 (request modification: confirmed) sent over MLLP" in text and "(no PID)" in text
    assert "ARQ|PL-APT-DEMO-2^DEMOHOSP|APT-DEMO-2^DEMOHOSP" in text
    assert "Patient replied STOP → consent opted_out" in text
    assert "the auditor got 403 from /admin" in text and "intact." in text
    assert "+1 201-555" not in text and "2015550123" not in text  # numbers are masked on screen
