"""Recorded Cloud API / Graph API exchanges, played back through the real aiohttp clients with vcrpy.

The cassettes under ``cassettes/`` hold Meta's documented request and response shapes (Cloud API "Send
messages" and "Error codes", Graph API "Handling errors", "WhatsApp Business Account Message Templates",
"Paginated results"), with synthetic values only: numbers +1 201-555-01xx, ids 1000000000000xx, the token
``TEST-TOKEN``, which the cassettes never contain (vcr's ``filter_headers`` drops ``Authorization``).

Playback goes through vcrpy's aiohttp stub, which replaces ``ClientSession._request``: the sender's
:class:`~whatsapp.transport.AiohttpTransport` and the templates client run unchanged, and a request
that no cassette interaction matches fails the test (``record_mode="none"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import vcr
from aiohttp import web
from vcr.request import Request as VcrRequest

from whatsapp.catalogue import TemplateCatalogue
from whatsapp.errors import (
    AccountBlockedError,
    AmbiguousSendError,
    ConfigurationError,
    RecipientThrottledError,
    RetryableError,
    WhatsAppError,
)
from whatsapp.sender import CloudApiSender, SendResult
from whatsapp.template_payloads import CreatedTemplate, RemoteTemplate
from whatsapp.template_sync import SyncItem, sync_templates
from whatsapp.templates_api import TemplatesClient

CASSETTES = Path(__file__).parent / "cassettes"
# The catalogue as it was when the template cassettes were written: the live one grows independently.
CATALOGUE = CASSETTES / "catalogue"
PORTAL = "https://portal.example.org"
GRAPH = "https://graph.facebook.com"
VERSION = "v23.0"
PHONE_NUMBER_ID = "100000000000001"
WABA_ID = "100000000000002"
TOKEN = "TEST-TOKEN"
WAMID = "wamid.HBgLMTIwMTU1NTAxMjMVAgARGBJTWU5USEVUSUMwMDAwMDAwMDEA"
PAYLOAD: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "+1 201-555-0123",
    "type": "template",
    "biz_opaque_callback_data": "outbox:42",
    "template": {
        "name": "appointment_confirmation",
        "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [
            {"type": "text", "text": "Tuesday, December 1, 2026"},
            {"type": "text", "text": "10:30 AM"},
            {"type": "text", "text": "Main Campus"},
        ]}],
    },
}
SEND_MATCH = ("method", "scheme", "host", "port", "path", "query", "body")  # body compared as JSON
TEMPLATE_MATCH = ("method", "scheme", "host", "port", "path", "query", "template_key")


def _template_key(r1: VcrRequest, r2: VcrRequest) -> None:
    """Matches creations on (name, language, category): the catalogue's wording may change, the key not."""
    def key(request: VcrRequest) -> tuple[Any, ...] | None:
        if not request.body:
            return None
        body = json.loads(request.body)
        return body.get("name"), body.get("language"), body.get("category")
    assert key(r1) == key(r2)


class Player:
    """A vcr configuration that plays cassettes back and remembers the Authorization values it scrubbed."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.vcr = vcr.VCR(
            cassette_library_dir=str(CASSETTES),
            record_mode="none",
            match_on=SEND_MATCH,
            # Drops the header like filter_headers=["authorization"], noting what the client sent first.
            filter_headers=[("authorization", self._drop_authorization)],
        )
        self.vcr.register_matcher("template_key", _template_key)

    def _drop_authorization(self, key: str, value: Any, request: VcrRequest) -> None:
        self.authorizations.extend(value if isinstance(value, list) else [value])
        return None


@pytest.fixture
def player() -> Iterator[Player]:
    recorder = Player()
    yield recorder
    assert set(recorder.authorizations) <= {f"Bearer {TOKEN}"}


def sender() -> CloudApiSender:
    return CloudApiSender(GRAPH, VERSION, PHONE_NUMBER_ID, TOKEN, timeout_seconds=5.0, max_connections=2)


async def test_accepted_send(player: Player) -> None:
    with player.vcr.use_cassette("send_accepted.yaml") as cassette:
        async with sender() as client:
            result = await client.send(PAYLOAD)
    assert result == SendResult(message_id=WAMID, wa_id="12015550123")
    assert cassette.all_played and cassette.play_count == 1
    assert player.authorizations and set(player.authorizations) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("cassette_name", "error_class", "code", "http_status", "trace"), [
    ("send_invalid_parameter_131009.yaml", ConfigurationError, 131009, 400, "ASyntheticTrace02"),
    ("send_token_expired_190.yaml", AccountBlockedError, 190, 401, "ASyntheticTrace03"),
    ("send_pair_rate_limit_131056.yaml", RecipientThrottledError, 131056, 400, "ASyntheticTrace06"),
])
async def test_refused_sends_are_classified(
    player: Player, cassette_name: str, error_class: type[WhatsAppError], code: int, http_status: int, trace: str
) -> None:
    with player.vcr.use_cassette(cassette_name) as cassette:
        async with sender() as client:
            with pytest.raises(error_class) as caught:
                await client.send(PAYLOAD)
    error = caught.value
    assert type(error) is error_class
    assert (error.code, error.http_status, error.fbtrace_id) == (code, http_status, trace)
    assert cassette.all_played
    assert "201-555" not in str(error)


async def test_details_are_kept_with_the_number_masked(player: Player) -> None:
    with player.vcr.use_cassette("send_invalid_parameter_131009.yaml"):
        async with sender() as client:
            with pytest.raises(ConfigurationError) as caught:
                await client.send(PAYLOAD)
    assert caught.value.details == "Recipient phone number <number> is not a valid WhatsApp phone number"
    assert caught.value.title == "Parameter value not valid"


async def test_expired_token_keeps_the_subcode(player: Player) -> None:
    with player.vcr.use_cassette("send_token_expired_190.yaml"):
        async with sender() as client:
            with pytest.raises(AccountBlockedError) as caught:
                await client.send(PAYLOAD)
    assert caught.value.subcode == 463


async def test_pair_rate_limit_says_when_to_retry(player: Player) -> None:
    with player.vcr.use_cassette("send_pair_rate_limit_131056.yaml"):
        async with sender() as client:
            with pytest.raises(RecipientThrottledError) as caught:
                await client.send(PAYLOAD)
    assert caught.value.retry_after_seconds == 6.0


async def test_throughput_limit_is_retryable_with_400_or_429(player: Player) -> None:
    statuses = []
    with player.vcr.use_cassette("send_throughput_130429.yaml") as cassette:
        async with sender() as client:
            for _ in range(2):
                with pytest.raises(RetryableError) as caught:
                    await client.send(PAYLOAD)
                assert not isinstance(caught.value, RecipientThrottledError | AmbiguousSendError)
                assert caught.value.code == 130429
                statuses.append(caught.value.http_status)
    assert statuses == [400, 429]
    assert cassette.all_played


async def test_a_request_the_cassette_does_not_hold_is_not_sent(player: Player) -> None:
    with player.vcr.use_cassette("send_accepted.yaml"):
        async with sender() as client:
            with pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException):
                await client.send({**PAYLOAD, "to": "+1 201-555-0124"})


def templates_client(page_size: int = 2) -> TemplatesClient:
    return TemplatesClient(GRAPH, VERSION, WABA_ID, TOKEN, timeout_seconds=5.0, page_size=page_size)


async def test_template_list_follows_paging_to_the_end(player: Player) -> None:
    with player.vcr.use_cassette("templates_list_two_pages.yaml") as cassette:
        async with templates_client() as client:
            templates = await client.list_templates()
    assert templates == [
        RemoteTemplate("100000000000011", "appointment_confirmation", "en_US", "APPROVED", "UTILITY"),
        RemoteTemplate("100000000000012", "appointment_confirmation", "es", "PENDING", "UTILITY"),
        RemoteTemplate("100000000000013", "results_ready", "en_US", "REJECTED", "UTILITY"),
        RemoteTemplate("100000000000014", "hello_world", "en_US", "APPROVED", "UTILITY"),
    ]
    assert cassette.all_played and cassette.play_count == 2  # the last page's cursors.after is not followed
    assert set(player.authorizations) == {f"Bearer {TOKEN}"}


async def test_template_create(player: Player) -> None:
    catalogue = TemplateCatalogue.load(CATALOGUE, public_base_url=PORTAL)
    definition = catalogue.get("results_ready", "es")
    assert definition is not None
    with player.vcr.use_cassette("template_create.yaml", match_on=TEMPLATE_MATCH) as cassette:
        async with templates_client() as client:
            created = await client.create_template(definition.raw)
    assert created == CreatedTemplate(id="100000000000021", status="PENDING", category="UTILITY")
    assert cassette.all_played
    recorded = json.loads(cassette.requests[0].body)
    assert set(recorded) == {"name", "language", "category", "parameter_format", "components"}


async def test_sync_creates_the_missing_templates_and_reports_every_status(player: Player) -> None:
    catalogue = TemplateCatalogue.load(CATALOGUE, public_base_url=PORTAL)
    with player.vcr.use_cassette("templates_sync.yaml", match_on=TEMPLATE_MATCH) as cassette:
        async with templates_client() as client:
            report = await sync_templates(client, catalogue)
    assert cassette.all_played and cassette.play_count == 5
    assert report.items == (
        SyncItem("appointment_confirmation", "en_US", "exists", "APPROVED", "100000000000011"),
        SyncItem("appointment_confirmation", "es", "exists", "PENDING", "100000000000012"),
        SyncItem("appointment_confirmation_minimal", "en_US", "created", "PENDING", "100000000000031"),
        SyncItem("appointment_confirmation_minimal", "es", "failed", None, error_code=100,
                 error="Invalid parameter"),
        SyncItem("results_ready", "en_US", "exists", "REJECTED", "100000000000013"),
        SyncItem("results_ready", "es", "created", "PENDING", "100000000000033"),
    )
    assert [(i.name, i.language) for i in report.usable] == [("appointment_confirmation", "en_US")]
    assert len(report.not_approved) == 5 and len(report.created) == 2 and len(report.failed) == 1


# -- the cassettes themselves ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<!\w)\+?\d[\d \-]{8,}\d(?!\w)")
_SYNTHETIC = re.compile(r"^(?:120155501\d\d|10{5,}\d+)$")  # +1 201-555-01xx numbers, 1000…0xx ids


@pytest.mark.parametrize("path", sorted(CASSETTES.glob("*.yaml")), ids=lambda p: p.name)
def test_cassettes_hold_no_token_and_only_synthetic_numbers(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert TOKEN not in text and "Bearer" not in text and "authorization:" not in text.lower()
    for match in _NUMBER.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        assert _SYNTHETIC.match(digits), f"{path.name}: {match.group()!r} is not a synthetic number or id"


# -- recording scrubs the token -------------------------------------------------------------------------------

@pytest.fixture
async def local_graph() -> AsyncIterator[str]:
    """A loopback stand-in for graph.facebook.com that accepts any send."""
    async def accept(request: web.Request) -> web.Response:
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": "+1 201-555-0123", "wa_id": "12015550123"}],
                                  "messages": [{"id": WAMID, "message_status": "accepted"}]})

    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_recording_through_the_transport_scrubs_the_token(local_graph: str, tmp_path: Path) -> None:
    recorder = vcr.VCR(cassette_library_dir=str(tmp_path), record_mode="once", match_on=SEND_MATCH,
                       filter_headers=["authorization"])
    for _ in range(2):  # first pass records against the loopback server, second plays it back
        with recorder.use_cassette("recorded.yaml"):
            async with CloudApiSender(local_graph, VERSION, PHONE_NUMBER_ID, TOKEN, 5.0, 2) as client:
                assert await client.send(PAYLOAD) == SendResult(WAMID, "12015550123")
    text = (tmp_path / "recorded.yaml").read_text(encoding="utf-8")
    assert TOKEN not in text and "authorization" not in text.lower()
    assert "Content-Type" in text and '"biz_opaque_callback_data":"outbox:42"' in text
