"""The console's sessions in real headless Chromium against the running demo stack: logging in with an
API key sets a ``Secure; HttpOnly; SameSite=Strict; Path=/console`` cookie and every page carries the
strict headers; a wrong key is refused; a forged form post without (or with a wrong) CSRF token is
refused 403 and audited; an auditor cannot reach operator pages and an operator cannot reach audit
content (pages or API); an idle session sends to the login page; logging out ends the session; every
page view is audited. Writes docs/screenshots/console-login*.png.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.console.web import COOKIE, CSP
from adapter.security.credentials import AuthenticationError, authenticate, digest
from adapter.security.roles import Role
from adapter.security.tables import ApiSession
from adapter.storage.db import table_of, transaction, utcnow
from tests.browser.conftest import screenshot
from tests.browser.console_stack import ConsoleStack, console_stack, login


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("console-auth")) as running:
        yield running


def events(stack: ConsoleStack, kind: str, after: int = 0) -> list[tuple[AuditEvent, dict[str, Any]]]:
    with Session(stack.engine) as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == kind, col(AuditEvent.id) > after)
                            .order_by(col(AuditEvent.id))).all()
    return [(row, json.loads(row.detail or "{}")) for row in rows]


def last_id(stack: ConsoleStack) -> int:
    with Session(stack.engine) as session:
        return max(session.exec(select(AuditEvent.id)).all(), default=None) or 0


def session_cookie(page: Any) -> dict[str, Any]:
    [cookie] = [c for c in page.context.cookies() if c["name"] == COOKIE]
    return dict(cookie)


def test_login_sets_a_strict_session_cookie_and_pages_carry_strict_headers(page: Any, stack: ConsoleStack) -> None:
    response = page.goto(stack.url("/console/login"))
    headers = response.headers
    assert response.status == 200 and headers["content-security-policy"] == CSP
    assert "frame-ancestors 'none'" in CSP and "form-action 'self'" in CSP and "unsafe-inline" not in CSP
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert page.locator("html").get_attribute("lang") == "en"
    screenshot(page, "console-login")
    page.set_viewport_size({"width": 375, "height": 700})
    screenshot(page, "console-login-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, stack, Role.AUDITOR)
    cookie = session_cookie(page)
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, True, "Strict",
                                                                                           "/console")
    assert cookie["expires"] == -1  # a browser-session cookie: the server ends it when idle
    assert authenticate(stack.engine, cookie["value"]).role is Role.AUDITOR  # the API's own session
    assert page.url.endswith("/console/audit") and "console-auditor" in page.content()
    assert stack.keys[Role.AUDITOR] not in page.content()  # the key is never echoed back


def test_a_wrong_key_is_refused_and_audited_and_a_system_key_gets_no_session(page: Any, stack: ConsoleStack) -> None:
    before = last_id(stack)
    page.goto(stack.url("/console/login"))
    page.get_by_label("API key").fill("not-a-key-" + "x" * 33)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Log in").click()
    assert posted.value.status == 401 and "not valid" in page.get_by_role("alert").inner_text()
    assert [d["reason"] for _, d in events(stack, "login", before)] == ["unknown"]
    screenshot(page, "console-login-refused")
    page.get_by_label("API key").fill(stack.keys[Role.INTEGRATION])
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Log in").click()
    assert posted.value.status == 403 and not [c for c in page.context.cookies() if c["name"] == COOKIE]


def test_a_form_post_without_the_csrf_token_is_refused_and_audited(page: Any, stack: ConsoleStack) -> None:
    login(page, stack, Role.AUDITOR)
    before = last_id(stack)
    forged = page.request.post(stack.url("/console/audit/search"), form={"patient": "Patient/csrf-probe"})
    assert forged.status == 403 and "Form refused" in forged.text()
    wrong = page.request.post(stack.url("/console/audit/search"),
                              form={"patient": "Patient/csrf-probe", "csrf_token": "0" * 64})
    assert wrong.status == 403
    alerts = [(row.agent, d["reason"], d["path"]) for row, d in events(stack, "security-alert", before)]
    assert alerts == [("user:console-auditor", "csrf-missing", "/console/audit/search"),
                      ("user:console-auditor", "csrf-wrong", "/console/audit/search")]
    assert not [d for _, d in events(stack, "audit-access", before) if d.get("op") == "search"]  # nothing ran
    logout = page.request.post(stack.url("/console/logout"), form={})
    assert logout.status == 403 and authenticate(stack.engine, session_cookie(page)["value"])  # still logged in


def test_an_auditor_cannot_reach_operator_pages_and_an_operator_cannot_reach_audit_content(
        page: Any, stack: ConsoleStack) -> None:
    from adapter.console.routes import _pages_modules

    operator_paths = [path for module in _pages_modules() for _, path, roles in getattr(module, "NAV", [])
                      if Role.OPERATOR in roles]
    audit_paths = ["/console/audit", "/console/audit/links", "/console/audit/chain", "/console/audit/events/1"]
    before = last_id(stack)
    login(page, stack, Role.AUDITOR)
    assert operator_paths, "the operator pages are mounted"
    for path in operator_paths:
        assert page.goto(stack.url(path)).status == 403, path
    assert "Not for your role" in page.content()
    page.context.clear_cookies()
    login(page, stack, Role.OPERATOR)
    for path in audit_paths:
        response = page.goto(stack.url(path))
        assert response.status == 403 and "Audit record" not in page.content(), path
    assert page.request.post(stack.url("/console/audit/links"), form={"patient": "Patient/x"}).status == 403
    token = httpx.post(stack.url("/auth/login"), headers={"Authorization": f"Bearer {stack.keys[Role.OPERATOR]}"},
                       timeout=5).json()["token"]
    assert httpx.get(stack.url("/audit/AuditEvent"), headers={"Authorization": f"Bearer {token}"},
                     timeout=5).status_code == 403
    refused = {(row.agent_role, d["path"]) for row, d in events(stack, "security-alert", before)
               if d["reason"] == "role"}
    assert {("auditor", path) for path in operator_paths} <= refused, refused
    assert ("operator", "/console/audit/events/{event_id}") in refused


def test_an_idle_session_sends_to_the_login_page(page: Any, stack: ConsoleStack) -> None:
    login(page, stack, Role.AUDITOR)
    token = session_cookie(page)["value"]
    with transaction(stack.engine) as session:
        renewed = session.exec(select(ApiSession).where(col(ApiSession.token_hash) == digest(token))).one()
        # Each page view moved the expiry to api_session_minutes from now.
        assert abs((renewed.expires_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None))
                   - timedelta(minutes=stack.demo.settings.api_session_minutes)) < timedelta(seconds=30)
        # The idle time passes: the expiry is behind us.
        session.execute(update(table_of(ApiSession)).where(table_of(ApiSession).c.token_hash == digest(token))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    before = last_id(stack)
    page.goto(stack.url("/console/audit/chain"))
    assert "/console/login?expired=1" in page.url and "without activity" in page.content()
    assert not [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert [d["reason"] for _, d in events(stack, "security-alert", before)] == ["expired"]
    screenshot(page, "console-login-expired")


def test_logging_out_ends_the_session_and_page_views_are_audited(page: Any, stack: ConsoleStack) -> None:
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    before = last_id(stack)
    login(page, stack, Role.AUDITOR)
    token = session_cookie(page)["value"]
    page.goto(stack.url("/console/audit/chain"))
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"  # the stylesheet applied
    assert not [text for text in messages if "Content Security Policy" in text]  # no inline script or style
    for path in ("/console/nowhere", "/console/audit/events/not-a-number", "/console/audit/events/999999"):
        missing = page.goto(stack.url(path))
        assert missing.status == 404 and missing.headers["content-security-policy"] == CSP, path
    views = [(row.agent, row.action, d["path"]) for row, d in events(stack, "audit-access", before)
             if d.get("op") == "page-view"]
    assert ("user:console-auditor", "R", "/console/audit/chain") in views
    page.keyboard.press("Tab")  # the skip link comes first and shows when focused
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(stack.url("/console/login"))
    with pytest.raises(AuthenticationError):
        authenticate(stack.engine, token)
    assert "logout" in [d.get("op") for _, d in events(stack, "login", before)]
    assert page.goto(stack.url("/console/audit")).url.endswith("/console/login")
