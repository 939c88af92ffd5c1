"""Secrets a patient types are found and removed; ordinary numbers are left alone. All values are synthetic."""

from __future__ import annotations

import logging
import time

import pytest

from mappings.redact import REMOVED, find_sensitive, luhn_valid, redact


@pytest.mark.parametrize(("text", "kinds", "redacted"), [
    ("4111 1111 1111 1111", ["card"], REMOVED),
    ("my card is 5555-5555-5555-4444 exp 12/29", ["card"], f"my card is {REMOVED} exp 12/29"),
    ("4111111111111111", ["card"], REMOVED),  # the published test card (synthetic)
    ("378282246310005 is my amex", ["card"], f"{REMOVED} is my amex"),  # 15 digits: a published test card (synthetic)
    ("4111 1111 1111 1111 12", ["card"], f"{REMOVED} 12"),  # a trailing group is not part of the card
    ("SSN 123-45-6789", ["ssn"], f"SSN {REMOVED}"),
    ("123-45-6789", ["ssn"], REMOVED),
    ("my SSN is 123456789", ["ssn"], f"my SSN is {REMOVED}"),
    ("social security number: 123 45 6789", ["ssn"], f"social security number: {REMOVED}"),
    ("número de seguro social 123-45-6789", ["ssn"], f"número de seguro social {REMOVED}"),
    ("社保号123456789", ["ssn"], f"社保号{REMOVED}"),
    ("my password is hunter2", ["password"], f"my password is {REMOVED}"),
    ("Password: Tr0ub4dor&3", ["password"], f"Password: {REMOVED}"),
    ("password hunter2", ["password"], f"password {REMOVED}"),
    ("my PIN is 4321", ["password"], f"my PIN is {REMOVED}"),
    ("mi contraseña es perro123", ["password"], f"mi contraseña es {REMOVED}"),
    ("la clave: 9876", ["password"], f"la clave: {REMOVED}"),
    ("我的密码是abc123，谢谢", ["password"], f"我的密码是{REMOVED}，谢谢"),  # noqa: RUF001
    ("密码：qwerty", ["password"], f"密码：{REMOVED}"),  # noqa: RUF001
    ("card 4111 1111 1111 1111 and password: hunter2", ["card", "password"],
     f"card {REMOVED} and password: {REMOVED}"),
])
def test_sensitive_values_are_removed(text: str, kinds: list[str], redacted: str) -> None:
    assert find_sensitive(text) == kinds
    assert redact(text) == (redacted, kinds)


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1112",  # Luhn-invalid
    "4111111111111112",  # synthetic: the test card with its check digit wrong
    "call me on +1 201 555 0123", "+12015550123", "(201) 555-0123",
    "see you on 2026-11-25 at 17:00", "25/11/2026 10:30", "12/29",
    "order 123456789", "123456789", "reference 1234567890123456789012345",  # bare 9 digits, 25 digits
    "I forgot my password", "my password is not working", "password reset please", "what is the PIN for?",
    "olvidé mi contraseña", "我的密码是什么", "我忘记密码了",
    "Can I move my appointment to 10:30 on Tuesday 1 December?", "",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert find_sensitive(text) == []
    assert redact(text) == (text, [])


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("5555555555554444")
    assert not luhn_valid("4111111111111112")  # synthetic


def test_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        redact("my password is hunter2, card 4111 1111 1111 1111, SSN 123-45-6789")
    assert caplog.records == []


def test_the_values_never_come_back() -> None:
    text = "my password is hunter2, card 4111 1111 1111 1111, SSN 123-45-6789"
    cleaned, kinds = redact(text)
    assert kinds == ["password", "card", "ssn"]
    for secret in ("hunter2", "4111", "123-45-6789"):
        assert secret not in cleaned and all(secret not in kind for kind in kinds)


def test_long_messages_do_not_backtrack_catastrophically() -> None:
    # Catastrophic backtracking takes minutes on inputs like these; the bound is far above any load.
    message = "Can I move my appointment to 10:30 on Tuesday? Call +1 201 555 0123. " * 60  # ~4 KB
    adversarial = ["1 " * 2048, "password " * 500, "ssn" + " " * 4000 + "x", "4" * 4096]
    started = time.perf_counter()
    for text in [message, *adversarial]:
        redact(text)
    assert time.perf_counter() - started < 10
