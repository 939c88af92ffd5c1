"""The operators' "HL7 dead letters" page in real headless Chromium against the running demo stack: an HL7 v2
message the processor could not process (the facility's field positions moved: SCH-20 is empty) is listed by
id, facility, type, MSH-10, received, error class and attempts — never its text nor its patient; a retry asks
for confirmation, queues it again through :func:`adapter.hl7.dead.redrive` (its alert closed, the retry
audited with the operator), and the message leaves the list. One whose text retention removed offers no
retry. An auditor is refused. Writes docs/screenshots/operator-hl7-dead.png.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlmodel import Session, col

from adapter.audit.tables import AuditEvent
from adapter.feeds.hl7_store import Hl7MessageStore
from adapter.feeds.hl7_tables import Hl7Message
from adapter.hl7.dead import alert_key
from adapter.hl7.processor import Hl7Processor
from adapter.ops.tables import OperatorAlert
from adapter.security.roles import Role
from adapter.storage.db import table_of, transaction
from ehr.hl7.config import load_config
from ehr.hl7.messages import parse_message
from tests.browser.conftest import screenshot
from tests.browser.console_stack import ConsoleStack, console_stack, login
from tests.ehr.hl7.conftest import PHONE, siu

MOVED = load_config({"facilities": {"SYNFAC": {"filler_id": "SCH-20"}}})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("hl7-dead-console")) as running:
        yield running


def dead_message(stack: ConsoleStack, control_id: str) -> int:
    """Stores a synthetic SIU as the listener does and lets the processor fail it for good (the real path)."""
    service = stack.demo.service
    Hl7MessageStore(service.engine, service.cipher).store_now(parse_message(siu(control_id=control_id),
                                                                            load_config({})))
    processor = Hl7Processor(service.engine, service.cipher, MOVED, service.decider)
    # Playwright's sync API holds this thread's event loop: the processor runs on its own thread.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, processor.run_once()).result(timeout=20) >= 1
    with Session(service.engine) as session:
        row = session.execute(select(Hl7Message).where(col(Hl7Message.control_id) == control_id)).scalar_one()
        assert row.state == "dead" and row.id is not None
        return row.id


def row_of(stack: ConsoleStack, message_id: int) -> Hl7Message:
    with Session(stack.engine) as session:
        row = session.get(Hl7Message, message_id)
        assert row is not None
        return row


def test_operator_sees_dead_hl7_without_content_and_retries_one(stack: ConsoleStack, page: Any) -> None:
    dead = dead_message(stack, "SYN-DEAD-1")
    purged = dead_message(stack, "SYN-DEAD-2")
    messages = table_of(Hl7Message)
    with transaction(stack.engine) as session:  # retention removed this one's text
        session.execute(update(messages).where(messages.c.id == purged).values(raw_enc=""))

    login(page, stack, Role.OPERATOR)
    page.get_by_role("link", name="HL7 dead letters").first.click()
    page.wait_for_url(stack.url("/console/operator/hl7-dead"))
    cells = [cell.strip() for cell in page.locator(f"#hl7-dead-{dead} td").all_inner_texts()]
    assert cells[:4] == [str(dead), "SYNFAC", "SIU^S12", "SYN-DEAD-1"]
    assert cells[4].endswith(" UTC") and cells[5:7] == ["MissingFieldError", "1"]
    content = page.content()
    for secret in (PHONE, "5550199", "SYN-MRN-7", "SYNTHETIC", "Example Street", "CHECKUP", "APT-1"):
        assert secret not in content
    purged_row = page.locator(f"#hl7-dead-{purged}")
    assert purged_row.get_by_role("button").count() == 0 and "send it again" in purged_row.inner_text()
    screenshot(page, "operator-hl7-dead")

    page.get_by_role("button", name=f"Retry HL7 message {dead}").click()
    assert f"Queue HL7 message {dead} again" in page.locator("#confirm-what").inner_text()
    assert row_of(stack, dead).state == "dead"  # posted, not confirmed
    page.get_by_label("I confirm").check()
    page.locator("form.stack button[type=submit]").click()
    assert "queued again" in page.get_by_role("status").inner_text()
    assert page.locator(f"#hl7-dead-{dead}").count() == 0 and page.locator(f"#hl7-dead-{purged}").count() == 1
    assert row_of(stack, dead).state != "dead"
    with Session(stack.engine) as session:
        alert = session.execute(select(OperatorAlert)
                                .where(col(OperatorAlert.dedupe_key) == alert_key(dead))).scalar_one()
        assert alert.acknowledged_at is not None
        entries = list(session.execute(select(AuditEvent).where(
            col(AuditEvent.entity_ref) == f"hl7_message/{dead}", col(AuditEvent.kind) == "admin")).scalars())
    console = [e for e in entries if json.loads(e.detail or "{}").get("op") == "hl7-dead-retry"]
    assert [(e.agent, e.agent_role, e.outcome) for e in console] == [("user:console-operator", "operator", "0")]
    assert any(json.loads(e.detail or "{}").get("command") == "hl7.dead.retry" and e.agent == "user:console-operator"
               for e in entries)

    # An auditor opens no operator page, and cannot post a retry.
    page.context.clear_cookies()
    login(page, stack, Role.AUDITOR)
    refused = page.goto(stack.url("/console/operator/hl7-dead"))
    assert refused is not None and refused.status == 403
    assert "SYN-DEAD-2" not in page.content()
