"""The README's first command keeps working: the demo runs end to end and finds no PHI."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.demo.run import run_demo

pytestmark = pytest.mark.fhir


def test_demo_shows_three_messages_and_no_phi(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(lines.append, keep_running=False, workdir=tmp_path) == 0
    text = "\n".join(lines)
    assert text.count("template appointment_confirmation") == 2 and "template results_ready" in text
    assert "PHI check: 0 of" in text and ": no_opt_in" in text
    assert "POST (the patient's tap) → 303" in text
    assert "as BALP IHE.BasicAudit.PrivacyDisclosure.Source AuditEvents" in text
    assert "the auditor got 403 from /admin" in text and "intact." in text
    assert "/_emulator/phone" in text  # the patients' phones page is announced
    assert "+1 201-555" not in text and "2015550123" not in text  # numbers are masked on screen
