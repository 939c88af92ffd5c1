"""CloudApiSender against the emulator over real loopback HTTP: success and every error class."""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from typing import Any

import pytest
from wa_helpers import PATIENT, PATIENT_DIGITS, PHONE_NUMBER_ID, TOKEN, VERSION, call, template_payload

from whatsapp.catalogue import TemplateCatalogue, parse_template
from whatsapp.emulator import EmulatorServer
from whatsapp.errors import (
    AccountBlockedError,
    AmbiguousSendError,
    ConfigurationError,
    RecipientThrottledError,
    RetryableError,
    WhatsAppError,
)
from whatsapp.sender import CloudApiSender


def make_sender(emulator: EmulatorServer, token: str = TOKEN, phone_number_id: str = PHONE_NUMBER_ID,
                timeout: float = 5.0) -> CloudApiSender:
    return CloudApiSender(emulator.base_url, VERSION, phone_number_id, token, timeout_seconds=timeout,
                          max_connections=8)


async def send_expecting(emulator: EmulatorServer, payload: dict[str, Any], **kwargs: Any) -> WhatsAppError:
    async with make_sender(emulator, **kwargs) as sender:
        with pytest.raises(WhatsAppError) as caught:
            await sender.send(payload)
    return caught.value


def with_template(**changes: Any) -> dict[str, Any]:
    payload = template_payload()
    payload["template"].update(changes)
    return payload


async def test_success_returns_unique_wamids_and_records_payload(emulator: EmulatorServer) -> None:
    async with make_sender(emulator) as sender:
        results = [await sender.send(template_payload()) for _ in range(5)]
    assert all(r.message_id.startswith("wamid.") for r in results)
    assert len({r.message_id for r in results}) == 5
    assert {r.wa_id for r in results} == {PATIENT_DIGITS}
    listed = await call("GET", f"{emulator.base_url}/_emulator/messages?to={PATIENT}")
    assert [m["id"] for m in listed["messages"]] == [r.message_id for r in results]
    assert listed["messages"][0]["payload"] == template_payload()
    other = await call("GET", f"{emulator.base_url}/_emulator/messages?to=12015550199")
    assert other["messages"] == []
    await call("DELETE", f"{emulator.base_url}/_emulator/messages")
    assert (await call("GET", f"{emulator.base_url}/_emulator/messages"))["messages"] == []


async def test_bad_token_blocks_the_account(emulator: EmulatorServer) -> None:
    error = await send_expecting(emulator, template_payload(), token="wrong")
    assert isinstance(error, AccountBlockedError)
    assert (error.code, error.http_status) == (190, 401)
    assert "wrong" not in str(error)


async def test_unknown_phone_number_id(emulator: EmulatorServer) -> None:
    error = await send_expecting(emulator, template_payload(), phone_number_id="100000000000999")
    assert isinstance(error, ConfigurationError)
    assert (error.code, error.subcode) == (100, 33)


@pytest.mark.parametrize(("payload", "code"), [
    (with_template(name="no_such_template"), 132001),
    (with_template(language={"code": "fr"}), 132001),
    (with_template(components=[{"type": "body", "parameters": [{"type": "text", "text": "one"}]}]), 132000),
    (with_template(components=[]), 132000),
    (template_payload(messaging_product="sms"), 100),
    ({k: v for k, v in template_payload().items() if k != "to"}, 100),
    (template_payload(type="carrier_pigeon"), 100),
])
async def test_invalid_requests_get_meta_codes(emulator: EmulatorServer, payload: dict[str, Any],
                                               code: int) -> None:
    error = await send_expecting(emulator, payload)
    assert isinstance(error, ConfigurationError)
    assert error.code == code
    assert error.fbtrace_id


def _button(index: str, sub_type: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "button", "sub_type": sub_type, "index": index, "parameters": parameters}


@pytest.mark.parametrize(("button", "code"), [
    (_button("7", "quick_reply", [{"type": "payload", "payload": "x"}]), 131009),
    (_button("0", "url", [{"type": "text", "text": "x"}]), 131009),
    (_button("zero", "quick_reply", [{"type": "payload", "payload": "x"}]), 131009),
    (_button("0", "quick_reply", [{"type": "payload", "payload": "p" * 257}]), 131009),
])
async def test_button_components_are_checked(emulator: EmulatorServer, button: dict[str, Any],
                                             code: int) -> None:
    payload = template_payload()
    payload["template"]["components"][1] = button
    error = await send_expecting(emulator, payload)
    assert isinstance(error, ConfigurationError) and error.code == code


def results_ready(components: list[dict[str, Any]]) -> dict[str, Any]:
    return template_payload(template={"name": "results_ready", "language": {"code": "en_US"},
                                      "components": components})


async def test_dynamic_url_button_needs_its_parameter(emulator: EmulatorServer) -> None:
    error = await send_expecting(emulator, results_ready([]))
    assert isinstance(error, ConfigurationError) and error.code == 132000
    async with make_sender(emulator) as sender:
        ok = await sender.send(results_ready([_button("0", "url", [{"type": "text", "text": "tok123"}])]))
    assert ok.message_id.startswith("wamid.")


async def test_parameter_text_with_newline_is_refused(emulator: EmulatorServer) -> None:
    payload = template_payload()
    payload["template"]["components"][0]["parameters"][2]["text"] = "Main\nCampus"
    error = await send_expecting(emulator, payload)
    assert isinstance(error, ConfigurationError) and error.code == 132018


NAMED = parse_template({
    "name": "named_reminder", "language": "en_US", "category": "UTILITY", "parameter_format": "NAMED",
    "components": [{"type": "BODY", "text": "Appointment on {{date}} at {{site}}."}],
})


async def test_named_parameters_need_parameter_name(start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(catalogue=TemplateCatalogue([NAMED]))
    base = {"name": "named_reminder", "language": {"code": "en_US"}}
    without = template_payload(template={**base, "components": [{"type": "body", "parameters": [
        {"type": "text", "text": "Dec 1"}, {"type": "text", "text": "Main Campus"}]}]})
    error = await send_expecting(emulator, without)
    assert isinstance(error, ConfigurationError) and error.code == 100
    named = copy.deepcopy(without)
    params = named["template"]["components"][0]["parameters"]
    params[0]["parameter_name"], params[1]["parameter_name"] = "date", "site"
    async with make_sender(emulator) as sender:
        assert (await sender.send(named)).message_id


@pytest.mark.parametrize(("fault", "expected", "code"), [
    ({"http_status": 500}, AmbiguousSendError, None),
    ({"http_status": 500, "code": 131000}, RetryableError, 131000),
    ({"http_status": 503, "code": 133004}, RetryableError, 133004),
    ({"http_status": 400, "code": 130429}, RetryableError, 130429),
    ({"http_status": 400, "code": 131056}, RecipientThrottledError, 131056),
    ({"http_status": 400, "code": 368}, AccountBlockedError, 368),
    ({"drop_connection": True}, AmbiguousSendError, None),
])
async def test_injected_faults(emulator: EmulatorServer, fault: dict[str, Any], expected: type[WhatsAppError],
                               code: int | None) -> None:
    await call("POST", f"{emulator.base_url}/_emulator/faults", {"responses": [fault]})
    async with make_sender(emulator) as sender:
        with pytest.raises(WhatsAppError) as caught:
            await sender.send(template_payload())
        assert type(caught.value) is expected
        assert caught.value.code == code
        # The fault was used up: the next send goes through on the same sender.
        assert (await sender.send(template_payload())).message_id


async def test_drop_after_accepting_is_ambiguous_and_the_message_exists(emulator: EmulatorServer) -> None:
    await call("POST", f"{emulator.base_url}/_emulator/faults",
               {"responses": [{"drop_connection": True, "accept": True}]})
    with pytest.raises(AmbiguousSendError):
        async with make_sender(emulator) as sender:
            await sender.send(template_payload(biz_opaque_callback_data="outbox:7"))
    listed = await call("GET", f"{emulator.base_url}/_emulator/messages")
    assert [m["payload"]["biz_opaque_callback_data"] for m in listed["messages"]] == ["outbox:7"]


async def test_read_timeout_is_ambiguous(emulator: EmulatorServer) -> None:
    await call("POST", f"{emulator.base_url}/_emulator/faults",
               {"responses": [{"delay_seconds": 1.0, "accept": True}]})
    error = await send_expecting(emulator, template_payload(), timeout=0.2)
    assert isinstance(error, AmbiguousSendError)


async def test_connection_refused_is_retryable_not_ambiguous() -> None:
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with CloudApiSender(url, VERSION, PHONE_NUMBER_ID, TOKEN, 2.0, 2) as sender:
            with pytest.raises(RetryableError) as caught:
                await sender.send(template_payload())
    assert not isinstance(caught.value, AmbiguousSendError)


async def test_optional_rate_limits(start_emulator: Callable[..., EmulatorServer]) -> None:
    emulator = start_emulator(pair_rate_limit_per_6s=2)
    async with make_sender(emulator) as sender:
        await sender.send(template_payload())
        await sender.send(template_payload())
        with pytest.raises(RecipientThrottledError):
            await sender.send(template_payload())
        assert await sender.send(template_payload(to="+1 201-555-0124"))  # other recipients are fine
    throttled = start_emulator(throughput_limit_per_second=1)
    async with make_sender(throttled) as sender:
        codes = []
        for _ in range(3):
            try:
                await sender.send(template_payload())
            except RetryableError as error:
                codes.append(error.code)
    assert 130429 in codes
