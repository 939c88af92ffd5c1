"""The charts page in real headless Chromium against the running demo stack (sandbox EHR, WhatsApp emulator,
service): after real sends — five booking confirmations, one refused by WhatsApp (an injected 131026), one
patient tapping Confirm, one tapping Cancel and "Yes, cancel" — the funnel chart an operator sees shows the
numbers the database holds (its bars' values and tooltips against count queries), the error chart shows the
refused send, the tables carry the same numbers, an auditor cannot open the page, and a reversed range is
refused with the default shown.

Writes docs/screenshots/charts.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from adapter.console.figures import FUNNEL_STAGES, utc_today
from adapter.conversation.tables import ActionRequest
from adapter.demo.stack import subscriptions_ready, wait_for
from adapter.outbox.tables import OutboxMessage
from adapter.security.roles import Role
from tests.browser.conftest import screenshot
from tests.browser.console_stack import ConsoleStack, console_stack, login
from tests.support.e2e import create, patient, sent_to
from tests.support.synthetic import synthetic_appointment

pytestmark = pytest.mark.fhir
TEMPLATE = "appointment_confirmation"
CONFIRMS, CANCELS, SILENT, REFUSED, SPANISH = 81, 82, 83, 84, 85  # phones +1 201-555-018n (synthetic)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    # One message per patient per second (not Meta's 6 s): the cancel question and its answer follow quickly.
    with console_stack(tmp_path_factory.mktemp("charts"), dispatch_backoff_seconds=0.2,
                       whatsapp_pair_interval_seconds=1.0) as running:
        wait_for(lambda: subscriptions_ready(running.demo), 30, "the EHR subscriptions")
        yield running


def book(stack: ConsoleStack, number: int, language: str = "en-US") -> str:
    patient_ref = patient(stack.demo, number, language=language)
    booking = synthetic_appointment(patient_ref)
    booking["participant"][0]["status"] = "needs-action"
    return f"Appointment/{create(stack.demo, booking)['id']}"


def tap(stack: ConsoleStack, number: int, **what: Any) -> None:
    httpx.post(f"{stack.demo.emulator.base_url}/_emulator/inbound", timeout=10,
               json={"from": f"+1 201-555-01{number:02d}", **what}).raise_for_status()


def quick_replies(message: dict[str, Any]) -> list[str]:
    """Confirm, Reschedule, Cancel, Talk to staff: the template's button payloads, in order."""
    return [c["parameters"][0]["payload"] for c in message["template"]["components"]
            if c.get("sub_type") == "quick_reply"]


def scalar(stack: ConsoleStack, statement: Any) -> int:
    with Session(stack.engine) as session:
        return int(session.exec(statement).one())


def database_funnel(stack: ConsoleStack, language: str) -> list[int]:
    """The funnel, counted here with plain queries, independently of adapter.console.figures."""
    mine = (col(OutboxMessage.template_name) == TEMPLATE, col(OutboxMessage.template_language) == language)
    count = select(func.count()).select_from(OutboxMessage).where(*mine)
    sent = count.where(col(OutboxMessage.state) == "sent")
    refs = select(OutboxMessage.resource_ref).where(*mine, col(OutboxMessage.state) == "sent")
    answers = select(func.count()).select_from(ActionRequest).where(col(ActionRequest.resource_ref).in_(refs))
    return [scalar(stack, count), scalar(stack, sent),
            scalar(stack, sent.where(col(OutboxMessage.delivery_status).in_(("delivered", "read")))),
            scalar(stack, sent.where(col(OutboxMessage.delivery_status) == "read")),
            scalar(stack, answers.where(col(ActionRequest.kind) == "confirm")),
            scalar(stack, answers.where(col(ActionRequest.kind) == "cancel")),
            scalar(stack, answers.where(col(ActionRequest.kind).startswith("reschedule")))]


def bars(page: Any, title: str) -> list[tuple[str, str, str]]:
    """(category, value, tooltip) of each bar of the chart titled ``title``, as the page shows them."""
    chart = page.locator("svg.chart").filter(has=page.locator(f'title:text-is("{title}")'))
    return [(bar.get_attribute("data-category"), bar.get_attribute("data-value"),
             bar.locator("title").text_content()) for bar in chart.locator("[data-value]").all()]


def settled(stack: ConsoleStack, refs: list[str]) -> bool:
    """Every answer carried out and every sent confirmation read (the emulator's last status applied)."""
    done = select(func.count()).select_from(ActionRequest).where(col(ActionRequest.state) == "done",
                                                                 col(ActionRequest.kind).in_(("confirm", "cancel")))
    read = select(func.count()).select_from(OutboxMessage).where(col(OutboxMessage.resource_ref).in_(refs),
                                                                 col(OutboxMessage.template_name) == TEMPLATE,
                                                                 col(OutboxMessage.delivery_status) == "read")
    return scalar(stack, done) == 2 and scalar(stack, read) == len(refs)


def test_the_funnel_chart_shows_what_the_database_holds(stack: ConsoleStack, page: Any) -> None:
    from playwright.sync_api import expect

    delivered = [book(stack, CONFIRMS), book(stack, CANCELS), book(stack, SILENT), book(stack, SPANISH, "es")]
    for number in (CONFIRMS, CANCELS, SILENT, SPANISH):
        wait_for(lambda n=number: sent_to(stack.demo, n), 20, "a confirmation")
    httpx.post(f"{stack.demo.emulator.base_url}/_emulator/faults", timeout=5,  # the next send: undeliverable
               json={"responses": [{"http_status": 400, "code": 131026}]}).raise_for_status()
    refused = book(stack, REFUSED)
    dead = select(func.count()).select_from(OutboxMessage).where(col(OutboxMessage.resource_ref) == refused,
                                                                 col(OutboxMessage.state) == "dead")
    wait_for(lambda: scalar(stack, dead) == 1, 20, "the refused confirmation's dead letter")

    [confirmation] = sent_to(stack.demo, CONFIRMS)
    tap(stack, CONFIRMS, button={"payload": quick_replies(confirmation)[0], "text": "Confirm"})
    [booking] = sent_to(stack.demo, CANCELS)
    tap(stack, CANCELS, button={"payload": quick_replies(booking)[2], "text": "Cancel"})
    question = wait_for(lambda: [m for m in sent_to(stack.demo, CANCELS) if m["type"] == "interactive"], 20,
                        "the are-you-sure question")[0]
    yes = question["interactive"]["action"]["buttons"][0]["reply"]
    tap(stack, CANCELS, button_reply={"id": yes["id"], "title": yes["title"]})
    wait_for(lambda: settled(stack, delivered), 30, "the answers carried out and every confirmation read")

    english = database_funnel(stack, "en_US")
    assert english == [4, 3, 3, 3, 1, 1, 0]  # the scenario above, as the database counts it
    assert database_funnel(stack, "es") == [1, 1, 1, 1, 0, 0, 0]

    login(page, stack, Role.OPERATOR)
    page.goto(stack.url("/console/charts"))
    expect(page.get_by_role("heading", name="Delivery funnel")).to_be_visible()
    shown = bars(page, f"{TEMPLATE} (en_US)")
    assert [(stage, int(value)) for stage, value, _ in shown] == list(zip(FUNNEL_STAGES, english, strict=True))
    assert shown[4][2] == "confirmed: 1 · % of queued: 25"  # the tooltip says the same
    assert [int(v) for _, v, _ in bars(page, f"{TEMPLATE} (es)")] == database_funnel(stack, "es")
    funnel = page.locator(f'svg.chart[data-chart^="funnel-"]:has(title:text-is("{TEMPLATE} (en_US)"))')
    values = funnel.locator("text.value").all_text_contents()
    assert [int(v) for v in values] == english  # the numbers printed at the bars' ends

    today = f"{utc_today():%m-%d}"
    errors = [(day, value, tip) for day, value, tip in bars(page, "Meta error codes per day") if value != "0"]
    assert errors == [(today, "1", f"{today} · 131026 undeliverable: 1")]  # the refused send
    sent_today = next(int(value) for day, value, _ in bars(page, "Messages sent per day") if day == today)
    assert sent_today >= 4  # the confirmations and the bot's answers

    figure = page.locator("figure.chart-figure").filter(has=funnel)
    table = figure.locator("table")
    figure.locator("summary").click()
    expect(table).to_be_visible()
    assert [int(cell) for cell in table.locator("tbody td:nth-child(2)").all_text_contents()] == english
    screenshot(page, "charts")

    page.set_viewport_size({"width": 375, "height": 812})  # a phone: one column, nothing wider than the screen
    expect(funnel).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    page.goto(stack.url("/console/charts?from=2026-03-10&to=2026-03-01"))
    expect(page.locator("#range-error")).to_contain_text("ends before it starts")
    expect(page.locator("#range-shown")).to_contain_text(f"to {utc_today().isoformat()}")


def test_an_auditor_cannot_open_the_charts(stack: ConsoleStack, page: Any) -> None:
    login(page, stack, Role.AUDITOR)
    response = page.goto(stack.url("/console/charts"))
    assert response is not None and response.status == 403
    assert page.locator("svg.chart").count() == 0
