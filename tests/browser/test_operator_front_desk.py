"""The operators' "Front desk" page in real headless Chromium against the running demo stack: questions that
found no approved answer counted per language and day, the answers served per entry and version with their
"was this helpful?" taps — counts only, no question's text, no patient. An auditor (not an operator) is
refused. Writes docs/screenshots/operator-front-desk.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter.conversation.answers import record
from adapter.security.roles import Role
from adapter.storage.db import transaction, utcnow
from tests.browser.conftest import screenshot
from tests.browser.console_stack import ConsoleStack, console_stack, login


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("front-desk-console")) as running:
        yield running


def test_operators_see_unanswered_questions_and_answers_served_as_counts(stack: ConsoleStack, page: Any) -> None:
    # The counters as the chat writes them (adapter.conversation.answers.record): no text, no patient.
    with transaction(stack.engine) as session:
        for kind, language, entry in [("unanswered", "es", None)] * 3 + [("unanswered", "zh_CN", None)] + [
                ("answered", "en_US", "clinic-hours@3")] * 2 + [("answered", "es", "parking@2"),
                                                              ("helpful", "en_US", "clinic-hours@3"),
                                                              ("unhelpful", "es", "parking@2"),
                                                              ("choices", "en_US", None)]:
            record(session, kind, language, entry)
    today = utcnow().date().isoformat()
    login(page, stack, Role.OPERATOR)
    page.get_by_role("link", name="Front desk").first.click()
    page.wait_for_url(stack.url("/console/operator/front-desk"))
    unanswered = [[cell.strip() for cell in row.split("\t")]
                  for row in page.locator("#unanswered-counts tbody tr").all_inner_texts()]
    assert unanswered == [[today, "zh_CN", "1"], [today, "es", "3"]]
    answers = [[cell.strip() for cell in row.split("\t")]
               for row in page.locator("#answer-counts tbody tr").all_inner_texts()]
    assert answers == [["clinic-hours@3", "2", "1", "0"], ["parking@2", "1", "0", "1"]]
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "operator-front-desk")

    # An auditor opens no operator page; without a session, the page sends to the login.
    page.context.clear_cookies()
    login(page, stack, Role.AUDITOR)
    refused = page.goto(stack.url("/console/operator/front-desk"))
    assert refused is not None and refused.status == 403
    assert "clinic-hours@3" not in page.content()
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        assert client.get("/console/operator/front-desk").status_code == 303
