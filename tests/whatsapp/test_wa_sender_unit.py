"""The sender with a small in-memory transport: request shape and failure mapping."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from wa_helpers import template_payload

from whatsapp.errors import AmbiguousSendError, ConfigurationError, RetryableError, WindowClosedError
from whatsapp.sender import CloudApiSender, SendResult
from whatsapp.transport import RequestNotSentError, ResponseLostError, TransportError


class FakeTransport:
    """Answers with a fixed outcome and keeps the last request."""

    def __init__(self, status: int = 200, body: bytes = b"", raises: TransportError | None = None) -> None:
        self.status, self.body, self.raises = status, body, raises
        self.last: tuple[str, bytes, dict[str, str], float] | None = None
        self.closed = False

    async def post_json(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes]:
        self.last = (url, body, dict(headers), timeout)
        if self.raises is not None:
            raise self.raises
        return self.status, self.body

    async def aclose(self) -> None:
        self.closed = True


OK = json.dumps({"messaging_product": "whatsapp",
                 "contacts": [{"input": "+1 201-555-0123", "wa_id": "12015550123"}],
                 "messages": [{"id": "wamid.OK", "message_status": "accepted"}]}).encode()


def sender(transport: FakeTransport) -> CloudApiSender:
    return CloudApiSender("http://127.0.0.1:9/", "v23.0", "100000000000001", "tok", 3.0, 4,
                          transport=transport)


async def test_request_shape_and_result() -> None:
    transport = FakeTransport(body=OK)
    async with sender(transport) as client:
        result = await client.send(template_payload())
    assert result == SendResult(message_id="wamid.OK", wa_id="12015550123")
    assert transport.closed
    assert transport.last is not None
    url, body, headers, timeout = transport.last
    assert url == "http://127.0.0.1:9/v23.0/100000000000001/messages"
    assert json.loads(body) == template_payload()
    assert headers["Authorization"] == "Bearer tok" and headers["Content-Type"] == "application/json"
    assert timeout == 3.0


async def test_never_sent_is_plain_retryable() -> None:
    with pytest.raises(RetryableError) as caught:
        await sender(FakeTransport(raises=RequestNotSentError("refused"))).send(template_payload())
    assert not isinstance(caught.value, AmbiguousSendError)


async def test_lost_response_is_ambiguous() -> None:
    with pytest.raises(AmbiguousSendError):
        await sender(FakeTransport(raises=ResponseLostError("read timeout"))).send(template_payload())


@pytest.mark.parametrize("body", [b"", b"not json", b'{"messages": []}', b'{"messages": [{"id": 5}]}'])
async def test_success_without_wamid_is_ambiguous(body: bytes) -> None:
    with pytest.raises(AmbiguousSendError):
        await sender(FakeTransport(200, body)).send(template_payload())


async def test_error_bodies_are_classified() -> None:
    window = json.dumps({"error": {"message": "(#131047) Re-engagement message", "code": 131047}}).encode()
    with pytest.raises(WindowClosedError):
        await sender(FakeTransport(400, window)).send(template_payload())
    with pytest.raises(ConfigurationError):
        await sender(FakeTransport(400, b"<html>bad request</html>")).send(template_payload())


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError):
        CloudApiSender("http://127.0.0.1:9", "v23.0", "1", "", transport=FakeTransport())
