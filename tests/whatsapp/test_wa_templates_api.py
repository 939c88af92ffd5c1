"""The templates client against a loopback Graph stand-in, and sync_templates with an in-memory registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from whatsapp.catalogue import CatalogueError, TemplateCatalogue
from whatsapp.errors import AccountBlockedError, AmbiguousSendError, ConfigurationError, RetryableError, classify
from whatsapp.template_payloads import CreatedTemplate, RemoteTemplate, creation_body
from whatsapp.template_sync import SyncItem, sync_templates
from whatsapp.templates_api import TemplatesClient

FROZEN_CATALOGUE = Path(__file__).parent / "cassettes" / "catalogue"
WABA_ID = "100000000000002"
TOKEN = "TEST-TOKEN"
PORTAL = "https://portal.example.org"

Handler = Callable[[web.Request], web.Response]


@dataclass
class Graph:
    """Answers each request with the next queued response and keeps what it received."""

    base_url: str = ""
    responses: list[web.Response] = field(default_factory=list)
    received: list[tuple[str, dict[str, str], dict[str, str], bytes]] = field(default_factory=list)

    def client(self, **kwargs: Any) -> TemplatesClient:
        return TemplatesClient(self.base_url, "v23.0", WABA_ID, TOKEN, timeout_seconds=5.0, **kwargs)


@pytest.fixture
async def graph() -> AsyncIterator[Graph]:
    state = Graph()

    async def handle(request: web.Request) -> web.Response:
        state.received.append((request.method, dict(request.query), dict(request.headers), await request.read()))
        return state.responses.pop(0)

    app = web.Application()
    app.router.add_route("*", "/v23.0/{waba}/message_templates", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def page(names: list[str], *, after: str | None = None, next_url: str | None = None) -> web.Response:
    paging: dict[str, Any] = {"cursors": {"before": "QkVGT1JF", "after": after or "TEFTVA=="}}
    if next_url is not None:
        paging["next"] = next_url
    data = [{"id": f"10000000000001{i}", "name": n, "language": "en_US", "status": "approved", "category": "UTILITY"}
            for i, n in enumerate(names)]
    return web.json_response({"data": data, "paging": paging})


async def test_list_follows_next_with_its_own_request_and_stops_without_next(graph: Graph) -> None:
    graph.responses = [
        page(["a", "b"], after="QUZURVIx", next_url="https://elsewhere.example/v23.0/x?after=QUZURVIx"),
        page(["c"], after="QUZURVIy"),  # last page: cursors but no next
    ]
    async with graph.client(page_size=2) as client:
        templates = await client.list_templates()
    assert [t.name for t in templates] == ["a", "b", "c"]
    assert templates[0] == RemoteTemplate("100000000000010", "a", "en_US", "APPROVED", "UTILITY")
    queries = [query for _, query, _, _ in graph.received]
    assert queries == [{"fields": "id,name,language,status,category", "limit": "2"},
                       {"fields": "id,name,language,status,category", "limit": "2", "after": "QUZURVIx"}]
    assert all(headers["Authorization"] == f"Bearer {TOKEN}" for _, _, headers, _ in graph.received)


async def test_list_reads_the_cursor_from_next_when_cursors_are_absent(graph: Graph) -> None:
    first = web.json_response({"data": [], "paging": {"next": f"{graph.base_url}/v23.0/{WABA_ID}/message_templates"
                                                              "?limit=2&after=Q1VSU09S"}})
    graph.responses = [first, page([])]
    async with graph.client(page_size=2) as client:
        assert await client.list_templates() == []
    assert graph.received[1][1]["after"] == "Q1VSU09S"


async def test_list_stops_on_a_repeated_cursor(graph: Graph) -> None:
    graph.responses = [page(["a"], after="U0FNRQ==", next_url="x"), page(["b"], after="U0FNRQ==", next_url="x")]
    async with graph.client() as client:
        with pytest.raises(RetryableError, match="repeats a cursor"):
            await client.list_templates()


@pytest.mark.parametrize(("response", "error_class"), [
    (lambda: web.json_response({"error": {"message": "Error validating access token", "type": "OAuthException",
                                          "code": 190, "fbtrace_id": "ASyntheticTrace"}}, status=401),
     AccountBlockedError),
    (lambda: web.json_response({"error": {"message": "(#100) Invalid parameter", "type": "OAuthException",
                                          "code": 100}}, status=400), ConfigurationError),
    (lambda: web.Response(status=503), RetryableError),
    (lambda: web.json_response({"data": [{"id": "1", "name": "a", "language": "en_US"}]}), RetryableError),
    (lambda: web.json_response({"paging": {}}), RetryableError),
    (lambda: web.Response(text="<html>proxy</html>", content_type="text/html"), RetryableError),
])
async def test_list_failures_are_classified(
    graph: Graph, response: Callable[[], web.Response], error_class: type[Exception]
) -> None:
    graph.responses = [response()]
    async with graph.client() as client:
        with pytest.raises(error_class):
            await client.list_templates()


async def test_connection_refused_is_retryable() -> None:
    async with TemplatesClient("http://127.0.0.1:9", "v23.0", WABA_ID, TOKEN, timeout_seconds=2.0) as client:
        with pytest.raises(RetryableError, match="Request not sent"):
            await client.list_templates()


async def test_create_posts_the_creation_body(graph: Graph) -> None:
    catalogue = TemplateCatalogue.load(FROZEN_CATALOGUE, public_base_url=PORTAL)
    template = catalogue.get("results_ready", "es")
    assert template is not None
    graph.responses = [web.json_response({"id": "100000000000021", "status": "PENDING", "category": "UTILITY"})]
    async with graph.client() as client:
        created = await client.create_template({**template.raw, "unrelated_note": "kept out"})
    assert created == CreatedTemplate("100000000000021", "PENDING", "UTILITY")
    method, _, headers, raw = graph.received[0]
    sent = json.loads(raw)
    assert method == "POST" and headers["Content-Type"] == "application/json"
    assert list(sent) == ["name", "language", "category", "parameter_format", "components"]
    assert sent["components"][2]["buttons"][0]["url"] == f"{PORTAL}/l/{{{{1}}}}"


async def test_create_without_an_id_in_the_answer_is_ambiguous(graph: Graph) -> None:
    graph.responses = [web.json_response({"success": True})]
    catalogue = TemplateCatalogue.load(FROZEN_CATALOGUE, public_base_url=PORTAL)
    async with graph.client() as client:
        with pytest.raises(AmbiguousSendError):
            await client.create_template(next(iter(catalogue)).raw)


def test_creation_body_refuses_what_meta_would_not_approve() -> None:
    unset_portal = TemplateCatalogue.load(FROZEN_CATALOGUE)  # URL buttons keep a relative "/l/{{1}}"
    template = unset_portal.get("results_ready", "en_US")
    assert template is not None
    with pytest.raises(CatalogueError, match="absolute https URL"):
        creation_body(template.raw)
    with pytest.raises(CatalogueError, match="lacks category"):
        creation_body({"name": "x", "language": "en_US", "components": [{"type": "BODY", "text": "Hi"}]})


def test_every_live_catalogue_template_has_a_valid_creation_body() -> None:
    for template in TemplateCatalogue.load(public_base_url=PORTAL):
        body = creation_body(template.raw)
        assert (body["name"], body["language"]) == (template.name, template.language)
        assert body["category"] in {"UTILITY", "MARKETING", "AUTHENTICATION"}


async def test_an_injected_session_is_left_open(graph: Graph) -> None:
    graph.responses = [page([])]
    async with aiohttp.ClientSession() as session:
        async with graph.client(session=session) as client:
            await client.list_templates()
        assert not session.closed


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="access_token"):
        TemplatesClient("https://graph.facebook.com", "v23.0", WABA_ID, "")


# -- sync_templates -------------------------------------------------------------------------------------------

@dataclass
class Registry:
    """An in-memory WABA: creation answers come from ``outcomes`` by template name."""

    remote: list[RemoteTemplate] = field(default_factory=list)
    outcomes: dict[str, Exception | CreatedTemplate] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    async def list_templates(self) -> list[RemoteTemplate]:
        return list(self.remote)

    async def create_template(self, template_definition: Mapping[str, Any]) -> CreatedTemplate:
        body = creation_body(template_definition)
        self.created.append(f"{body['name']}.{body['language']}")
        outcome = self.outcomes.get(body["name"], CreatedTemplate("100000000000099", "PENDING", "UTILITY"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def frozen(public_base_url: str = PORTAL) -> TemplateCatalogue:
    return TemplateCatalogue.load(FROZEN_CATALOGUE, public_base_url=public_base_url)


async def test_sync_stops_creating_once_the_account_is_blocked() -> None:
    expired = classify(401, {"error": {"message": "Error validating access token", "code": 190}})
    registry = Registry(
        remote=[RemoteTemplate("100000000000011", "appointment_confirmation", "en_US", "APPROVED", "UTILITY")],
        outcomes={"appointment_confirmation": expired})
    report = await sync_templates(registry, frozen())
    assert registry.created == ["appointment_confirmation.es"]  # nothing more after the 190
    assert report.items[0] == SyncItem("appointment_confirmation", "en_US", "exists", "APPROVED", "100000000000011")
    assert [(i.action, i.error_code) for i in report.items[1:]] == [("failed", 190)] * 5
    assert report.items[2].error == "not attempted: Access token invalid or expired"
    assert [i.name for i in report.usable] == ["appointment_confirmation"]


async def test_sync_reports_a_local_refusal_and_goes_on() -> None:
    registry = Registry()
    report = await sync_templates(registry, frozen(public_base_url=""))
    by_key = {(i.name, i.language): i for i in report.items}
    refused = by_key[("results_ready", "es")]
    assert (refused.action, refused.remote_status, refused.error_code) == ("failed", None, None)
    assert refused.error is not None and "https" in refused.error
    assert by_key[("appointment_confirmation", "es")].action == "created"
    assert len(registry.created) == 4 and len(report.failed) == 2
    assert report.usable == []  # PENDING templates are not sent


async def test_sync_goes_on_after_a_retryable_failure() -> None:
    registry = Registry(outcomes={"appointment_confirmation": classify(429, {"error": {"code": 80008}})})
    report = await sync_templates(registry, frozen())
    assert [i.action for i in report.items] == ["failed", "failed", "created", "created", "created", "created"]
    assert report.items[0].error_code == 80008
