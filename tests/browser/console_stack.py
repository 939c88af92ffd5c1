"""The running demo stack (sandbox EHR, emulator, service) with one API key per console role, and a
browser login through the real login page: what every console browser test starts from.

Use it as a module-scoped fixture (a :class:`ConsoleStack` is also a context manager that stops it)::

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory):
        with console_stack(tmp_path_factory.mktemp("console")) as running:
            yield running
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from adapter.demo.stack import DemoStack, demo_engine, start_stack
from adapter.security.credentials import create_credential
from adapter.security.roles import Role

CONSOLE_KEY_ROLES = (Role.AUDITOR, Role.PRIVACY_OFFICER, Role.OPERATOR, Role.ADMIN, Role.INTEGRATION)


@dataclass
class ConsoleStack:
    demo: DemoStack
    engine: Engine
    keys: dict[Role, str] = field(default_factory=dict)  # one API key per role, named "console-<role>"

    @property
    def base_url(self) -> str:
        return self.demo.settings.public_base_url

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def stop(self) -> None:
        self.engine.dispose()
        self.demo.stop()

    def __enter__(self) -> ConsoleStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def console_stack(tmp_path: Path, **overrides: Any) -> ConsoleStack:
    """A started stack with a key per role (``overrides`` go to the settings); call ``stop()`` or use
    it in a ``with`` block."""
    demo = start_stack(tmp_path, **overrides)
    running = ConsoleStack(demo, demo_engine(demo))
    try:
        for role in CONSOLE_KEY_ROLES:
            running.keys[role] = create_credential(running.engine, f"console-{role.value}", role, actor="test")
    except BaseException:
        running.stop()
        raise
    return running


def login(page: Any, stack: ConsoleStack, role: Role) -> None:
    """Logs ``page`` in through the login page with ``role``'s key and waits for the role's first page."""
    page.goto(stack.url("/console/login"))
    page.get_by_label("API key").fill(stack.keys[role])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/console/" in url and not url.endswith("/console/login"))
