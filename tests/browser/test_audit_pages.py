"""The auditor pages in real headless Chromium against the running demo stack (sandbox EHR, WhatsApp
emulator, service): a real "results ready" message goes out with a portal link, the link is opened
over HTTP, and an auditor finds who opened it (when, from where), searches the trail, reads one
record as a BALP AuditEvent and in plain words, exports a CSV whose signed manifest verifies, and runs
the chain verification; a privacy officer resolves a patient with a stated reason (audited), which an
auditor cannot. Every look-up is itself in the trail. Writes docs/screenshots/audit-*.png.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from adapter.audit.csv_export import verify_export_bytes
from adapter.audit.tables import AuditEvent
from adapter.demo.stack import subscriptions_ready, wait_for
from adapter.security.roles import Role
from tests.browser.conftest import screenshot
from tests.browser.console_stack import ConsoleStack, console_stack, login
from tests.support.e2e import create, patient, sent_to
from tests.support.synthetic import synthetic_diagnostic_report

PATIENT_NUMBER = 61


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("audit-pages")) as running:
        yield running


@pytest.fixture(scope="module")
def opened(stack: ConsoleStack) -> str:
    """A synthetic patient whose "results ready" link was previewed by a bot and opened by a tap."""
    wait_for(lambda: subscriptions_ready(stack.demo), 30, "the EHR subscriptions")
    patient_ref = patient(stack.demo, PATIENT_NUMBER)
    create(stack.demo, synthetic_diagnostic_report(patient_ref, status="final"))
    [message] = wait_for(lambda: sent_to(stack.demo, PATIENT_NUMBER), 30, "the results-ready message")
    button = next(c for c in message["template"]["components"] if c.get("sub_type") == "url")
    link = stack.url(f"/l/{button['parameters'][0]['text']}")
    assert httpx.get(link, timeout=5).status_code == 200  # a link-preview bot
    assert httpx.post(link, timeout=5).status_code == 303  # the patient's tap
    return patient_ref


def audit_rows(stack: ConsoleStack, kind: str) -> list[tuple[AuditEvent, dict[str, Any]]]:
    with Session(stack.engine) as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == kind).order_by(col(AuditEvent.id)))
        return [(row, json.loads(row.detail or "{}")) for row in rows]


def test_an_auditor_finds_who_opened_a_patients_link(page: Any, stack: ConsoleStack, opened: str) -> None:
    login(page, stack, Role.AUDITOR)
    page.get_by_role("link", name="Link opens").click()
    page.get_by_label("Patient reference").fill(opened)
    page.get_by_role("button", name="Show link requests").click()
    heading = page.get_by_role("heading", level=2).first
    assert "2 requests" in heading.inner_text() and "1 opened" in heading.inner_text()
    rows = page.locator("tbody tr")
    assert rows.count() == 2
    newest = rows.nth(0).inner_text()
    assert "opened" in newest and "(POST)" in newest and "127.0.0.1" in newest
    assert "preview" in rows.nth(1).inner_text()
    assert opened.split("/")[1] not in page.url  # the patient travelled in the POST body only
    lookups = [row for row, d in audit_rows(stack, "audit-access") if d.get("op") == "link-access"]
    assert lookups and lookups[-1].patient_ref == opened and lookups[-1].agent == "user:console-auditor"
    screenshot(page, "audit-link-opens")
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375 + 1  # no sideways page scroll
    screenshot(page, "audit-link-opens-phone")


def test_an_auditor_searches_and_reads_one_record_as_balp_and_in_words(page: Any, stack: ConsoleStack,
                                                                       opened: str) -> None:
    login(page, stack, Role.AUDITOR)
    page.get_by_label("Patient reference").fill(opened)
    page.get_by_label("Kind").select_option("disclosure")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("heading", name="1 record, 1\u20131 shown").is_visible()
    screenshot(page, "audit-search")
    page.locator("tbody tr a").first.click()
    words = page.locator(".lead").inner_text()
    assert words.startswith("The bridge sent a WhatsApp template results_ready to " + opened)
    balp = json.loads(page.locator("pre code").inner_text())
    assert balp["resourceType"] == "AuditEvent" and balp["meta"]["profile"][0].endswith("PrivacyDisclosure.Source")
    assert {"reference": opened} in [entity["what"] for entity in balp["entity"] if "what" in entity]
    screenshot(page, "audit-event")
    # The search is audited with its patient (q.patient may read "(withheld)": an id can look like a phone number).
    searches = [(row.patient_ref, d["q.type"]) for row, d in audit_rows(stack, "audit-access")
                if d.get("op") == "search"]
    assert searches[-1] == (opened, "disclosure")


def test_an_auditor_exports_csv_with_a_signed_manifest(page: Any, stack: ConsoleStack, opened: str) -> None:
    login(page, stack, Role.AUDITOR)
    page.get_by_label("Patient reference").fill(opened)
    page.get_by_role("button", name="Search").click()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV with signed manifest (.zip)").click()
    download = download_info.value
    with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as archive:
        names = sorted(archive.namelist())
        [csv_name] = [name for name in names if name.endswith(".csv")]
        data, manifest = archive.read(csv_name), archive.read(csv_name.removesuffix(".csv") + ".manifest.json")
    assert download.suggested_filename == csv_name.removesuffix(".csv") + ".zip"
    assert verify_export_bytes(data, csv_name, manifest, stack.demo.service.audit_signer.public) == (True, None)
    lines = data.decode().splitlines()
    assert len(lines) > 3 and all(opened in line for line in lines[1:])
    assert json.loads(manifest)["query"] == [["patient", opened]]
    exports = [row for row, d in audit_rows(stack, "audit-access") if d.get("op") == "export"]
    assert exports and exports[-1].patient_ref == opened


def test_the_chain_page_runs_verify_and_shows_the_result(page: Any, stack: ConsoleStack) -> None:
    login(page, stack, Role.AUDITOR)
    page.get_by_role("link", name="Chain and checkpoints").click()
    wait_for(lambda: page.reload() and "none yet" not in page.locator("dl.facts").inner_text(), 15,
             "a signed checkpoint")
    page.get_by_role("button", name="Verify the chain now").click()
    result = page.locator("#verify-result").inner_text()
    assert "Intact:" in result and "signed checkpoint" in result
    screenshot(page, "audit-chain")
    verifies = [(row.outcome, d["ok"]) for row, d in audit_rows(stack, "audit-access") if d.get("op") == "verify"]
    assert verifies[-1] == ("0", True)


def test_a_privacy_officer_resolves_a_patient_with_a_reason_and_an_auditor_cannot(
        page: Any, stack: ConsoleStack, opened: str) -> None:
    login(page, stack, Role.AUDITOR)
    assert page.goto(stack.url("/console/audit/resolve")).status == 403
    page.context.clear_cookies()
    login(page, stack, Role.PRIVACY_OFFICER)
    page.get_by_role("link", name="Resolve a patient").click()
    page.get_by_label("Patient reference").fill(opened)
    page.get_by_label("Reason (recorded in the audit trail)").fill("complaint review 7")
    page.get_by_label("I confirm").check()
    page.get_by_role("button", name="Resolve").click()
    assert "Synthetic Testpatient" in page.locator("dl.facts").inner_text()
    [resolve] = [row for row, _ in audit_rows(stack, "resolve")]
    assert (resolve.patient_ref, resolve.purpose, resolve.agent) == (opened, "complaint review 7",
                                                                     "user:console-privacy_officer")
    screenshot(page, "audit-resolve")
    assert not page.get_by_role("button", name="Export CSV with signed manifest (.zip)").count()
