"""The error table and classify(): each Meta code lands in the class that says what to do."""

from __future__ import annotations

import pytest

from whatsapp.errors import (
    ERROR_CLASSES,
    AccountBlockedError,
    AmbiguousSendError,
    ConfigurationError,
    RecipientThrottledError,
    RetryableError,
    UndeliverableError,
    WhatsAppError,
    WindowClosedError,
    classify,
    from_error_fields,
)

EXPECTED = {
    RetryableError: [1, 2, 4, 80007, 130429, 131000, 131016, 131057, 133004],
    RecipientThrottledError: [131056],
    WindowClosedError: [131047],
    UndeliverableError: [131026, 131049, 131050, 130472],
    ConfigurationError: [100, 131008, 131009, 131051, 132000, 132001, 132005, 132007, 132012, 132015,
                         132016, 132018, 133010],
    AccountBlockedError: [0, 3, 10, 190, 200, 299, 368, 131005, 131031, 131042, 131048],
}


def _body(code: int, **extra: object) -> dict[str, object]:
    return {"error": {"message": f"(#{code}) Something", "type": "OAuthException", "code": code,
                      "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUvW", **extra}}


@pytest.mark.parametrize(("cls", "code"), [(cls, code) for cls, codes in EXPECTED.items() for code in codes])
def test_code_maps_to_class(cls: type[WhatsAppError], code: int) -> None:
    assert ERROR_CLASSES[code] is cls
    error = classify(400, _body(code))
    assert type(error) is cls
    assert error.code == code


def test_table_has_every_code_the_brief_names() -> None:
    for code in (1, 2, 4, 130429, 131000, 131016, 133004, 131056, 131047, 131026, 100, 132000, 132001,
                 132005, 132007, 132012, 132015, 132016, 131008, 131009, 133010, 190, 368, 131031, 131042):
        assert code in ERROR_CLASSES


def test_hierarchy_says_what_may_be_retried() -> None:
    assert issubclass(RecipientThrottledError, RetryableError)
    assert issubclass(AmbiguousSendError, RetryableError)
    for cls in (WindowClosedError, UndeliverableError, ConfigurationError, AccountBlockedError):
        assert not issubclass(cls, RetryableError)
        assert issubclass(cls, WhatsAppError)


def test_error_carries_meta_identifiers() -> None:
    body = _body(100, error_subcode=33, error_data={"messaging_product": "whatsapp", "details": "x"})
    error = classify(400, body)
    assert (error.code, error.subcode, error.http_status) == (100, 33, 400)
    assert error.fbtrace_id == "AbCdEfGhIjKlMnOpQrStUvW"
    assert error.title == "Invalid parameter"
    assert "code=100/33" in str(error)


def test_pair_rate_limit_waits_at_least_six_seconds() -> None:
    error = classify(400, _body(131056))
    assert isinstance(error, RecipientThrottledError)
    assert error.retry_after_seconds >= 6


def test_5xx_without_body_is_ambiguous_but_5xx_with_error_is_retryable() -> None:
    assert type(classify(500, None)) is AmbiguousSendError
    assert type(classify(502, {"unexpected": True})) is AmbiguousSendError
    assert type(classify(500, _body(131000))) is RetryableError
    assert type(classify(503, _body(133004))) is RetryableError


def test_unknown_codes_fall_back_on_http_status() -> None:
    assert type(classify(429, None)) is RetryableError
    assert type(classify(500, _body(999_999))) is RetryableError
    assert type(classify(403, _body(999_999))) is AccountBlockedError
    assert type(classify(401, None)) is AccountBlockedError
    assert type(classify(400, _body(999_999))) is ConfigurationError
    assert type(classify(404, None)) is ConfigurationError


def test_no_phone_number_or_text_in_messages() -> None:
    body = _body(131009, error_data={"details": "to: +1 201-555-0123 is not valid, text 'Hello'"})
    body["error"]["message"] = "(#131009) Parameter value is not valid for 12015550123"  # type: ignore[index]
    error = classify(400, body)
    assert "0123" not in str(error) and "Hello" not in str(error)
    assert error.details is not None and "555-0123" not in error.details
    unknown = from_error_fields(code=424242, message="(#424242) Failed for 12015550123", http_status=400)
    assert "12015550123" not in str(unknown)


def test_webhook_errors_classify_the_same_way() -> None:
    assert isinstance(from_error_fields(code=131047, message="Re-engagement message"), WindowClosedError)
    assert isinstance(from_error_fields(code=131026, message="Message undeliverable"), UndeliverableError)
