"""The filter engine: every built-in kind on both stages, real webhook servers on loopback (one that changes the
text, one too slow, one answering garbage), the URL policy, and filters loaded from a real registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from modelhub_chat_gateway.adapters.registry_client import RegistryClient
from modelhub_chat_gateway.errors import FilterBlockedError, FilterFailedError, GatewayError
from modelhub_chat_gateway.service_layer.filters import FilterNotice, FilterRunner, FilterSpec
from modelhub_devstack.asgi import serve_in_thread

HOOK_SECRET = "hook-secret-" + "h" * 20


@dataclass
class Webhooks:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    """A webhook filter server on loopback: ``/upper`` answers the text upper-cased (``/upper`` of a text
    holding "forbidden" refuses it), ``/slow`` answers after 2 s, ``/garbage`` with plain text, ``/status`` with
    HTTP 500, ``/shape`` with JSON of the wrong shape, ``/huge`` with more text than allowed."""
    hooks = Webhooks(url="")
    app = FastAPI()

    @app.post("/upper")
    async def upper(request: Request) -> Any:
        body = await request.json()
        hooks.received.append(body)
        hooks.authorizations.append(request.headers.get("authorization"))
        if "forbidden" in body["text"]:
            return {"block": "the audit service refused this"}
        return {"text": body["text"].upper()}

    @app.post("/slow")
    async def slow() -> Any:
        await asyncio.sleep(2)
        return {"text": "too late"}

    @app.post("/garbage")
    async def garbage() -> Any:
        return PlainTextResponse("<html>oops</html>")

    @app.post("/status")
    async def status() -> Any:
        return JSONResponse({"text": "fine"}, status_code=500)

    @app.post("/shape")
    async def shape() -> Any:
        return {"text": 42}

    @app.post("/huge")
    async def huge() -> Any:
        return {"text": "x" * 5000}

    with serve_in_thread(app, name="filter-webhooks", log_level="warning", timeout_graceful_shutdown=2) as url:
        hooks.url = url
        yield hooks


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        yield client


@pytest.fixture
def runner(http: httpx.AsyncClient) -> FilterRunner:
    return FilterRunner(http, allow_private_urls=True, max_text_chars=1000)


def spec(filter_id: str, kind: str, config: dict[str, Any], direction: str = "both", **extra: Any) -> FilterSpec:
    body: dict[str, Any] = {"id": filter_id, "name": filter_id, "kind": kind, "direction": direction, "config": config}
    if kind in ("redact", "block"):
        body["regexes"] = config["patterns"]
    return FilterSpec.from_registry({**body, **extra})


async def run(runner: FilterRunner, stage: Any, filters: list[FilterSpec], text: str) -> tuple[str, list[FilterNotice]]:
    return await runner.run(stage, filters, text, model_id="helper", user_id="alice")


@pytest.mark.parametrize("stage", ["inlet", "outlet"])
async def test_each_built_in_kind_on_each_stage(runner: FilterRunner, stage: str) -> None:
    redact = spec("no-digits", "redact", {"patterns": [r"\d{3,}"], "replacement": r"[\g<0>]"})
    text, notices = await run(runner, stage, [redact], "call 5551234 or 42")
    assert text == r"call [\g<0>] or 42"  # the replacement is inserted as written, never as a template
    assert [(n.filter_id, n.code) for n in notices] == [("no-digits", "filter_changed")]

    prepend = spec("hello", "prepend", {"text": "Be kind."})
    append = spec("bye", "append", {"text": "-- sent via modelhub"})
    text, notices = await run(runner, stage, [prepend, append], "hi")
    assert text == "Be kind.\n\nhi\n\n-- sent via modelhub" and notices == []

    cut = spec("short", "max_length", {"max_chars": 5})
    text, notices = await run(runner, stage, [cut], "abcdefghij")
    assert text == "abcde" and notices[0].code == "filter_changed" and "5 of 10" in notices[0].message
    assert await run(runner, stage, [cut], "abc") == ("abc", [])

    block = spec("no-secrets", "block", {"patterns": ["sk-[A-Za-z0-9]{20,}"], "message": "no API keys, please"})
    assert await run(runner, stage, [block], "nothing secret") == ("nothing secret", [])
    with pytest.raises(FilterBlockedError) as blocked:
        await run(runner, stage, [block, cut], "my key is sk-" + "a" * 24)
    assert blocked.value.message == "no API keys, please" and blocked.value.code == "filter_blocked"
    assert blocked.value.filter_id == "no-secrets" and isinstance(blocked.value, GatewayError)


async def test_filters_run_in_order_and_only_on_their_stage(runner: FilterRunner) -> None:
    filters = [
        spec("first", "append", {"text": "A"}, direction="inlet"),
        spec("cut", "max_length", {"max_chars": 4}),
        spec("last", "append", {"text": "B"}, direction="outlet"),
    ]
    assert (await run(runner, "inlet", filters, "xy"))[0] == "xy\n\nA"[:4]
    assert (await run(runner, "outlet", filters, "xy"))[0] == "xy\n\nB"
    assert not spec("o", "append", {"text": "x"}, direction="outlet").applies("inlet")
    assert spec("b", "append", {"text": "x"}).applies("inlet")


async def test_an_unknown_kind_is_skipped_with_a_notice(runner: FilterRunner) -> None:
    future = spec("new-kind", "translate", {"to": "fr"})
    text, notices = await run(runner, "inlet", [future], "hello")
    assert text == "hello"
    assert [(n.filter_id, n.code) for n in notices] == [("new-kind", "filter_skipped")]
    assert "translate" in notices[0].message


def test_from_registry_refuses_malformed_configs() -> None:
    for body in [
        {"kind": "append", "direction": "both", "config": {}},
        {"id": "x", "kind": "append", "direction": "up", "config": {}},
        {"id": "x", "kind": "redact", "direction": "both", "config": {}, "regexes": ["("]},
        {"id": "x", "kind": "block", "direction": "both", "config": {"patterns": "sk-"}},
    ]:
        with pytest.raises(ValueError):
            FilterSpec.from_registry(body)


async def test_a_webhook_changes_the_text_with_the_documented_request(runner: FilterRunner, webhooks: Webhooks) -> None:
    hook = spec("audit", "webhook", {"url": f"{webhooks.url}/upper", "timeout_seconds": 5, "secret": HOOK_SECRET})
    text, notices = await run(runner, "outlet", [spec("a", "append", {"text": "ok"}), hook], "the answer")
    assert text == "THE ANSWER\n\nOK"
    assert [(n.filter_id, n.code) for n in notices] == [("audit", "filter_changed")]
    assert webhooks.received[-1] == {
        "filter_id": "audit",
        "stage": "outlet",
        "model_id": "helper",
        "user_id": "alice",
        "text": "the answer\n\nok",
    }
    assert webhooks.authorizations[-1] == f"Bearer {HOOK_SECRET}"

    without_secret = spec("audit2", "webhook", {"url": f"{webhooks.url}/upper"})
    assert (await run(runner, "inlet", [without_secret], "HI"))[0] == "HI"
    assert webhooks.authorizations[-1] is None

    with pytest.raises(FilterBlockedError) as blocked:
        await run(runner, "inlet", [hook], "something forbidden")
    assert blocked.value.message == "the audit service refused this"


async def test_a_webhook_past_its_timeout_fails_closed(runner: FilterRunner, webhooks: Webhooks) -> None:
    slow = spec("slow-hook", "webhook", {"url": f"{webhooks.url}/slow", "timeout_seconds": 0.5})
    after = spec("after", "append", {"text": "must not run"})
    with pytest.raises(FilterFailedError) as failed:
        await run(runner, "inlet", [slow, after], "hello")
    error = failed.value
    assert error.code == "filter_failed" and error.filter_id == "slow-hook" and error.stage == "inlet"
    assert "'slow-hook'" in error.message and "did not answer within 0.5 s" in error.message
    assert "try again later" in error.message and "modelhub filters show slow-hook" in error.message


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/garbage", "not JSON"),
        ("/status", "HTTP 500"),
        ("/shape", 'neither {"text": ...} nor {"block": ...}'),
        ("/huge", "5000 characters"),
        ("/no-such-route", "HTTP 404"),
    ],
)
async def test_a_webhook_answering_garbage_fails_closed(
    runner: FilterRunner, webhooks: Webhooks, path: str, problem: str
) -> None:
    hook = spec("bad-hook", "webhook", {"url": f"{webhooks.url}{path}", "timeout_seconds": 5})
    with pytest.raises(FilterFailedError) as failed:
        await run(runner, "outlet", [hook], "an answer")
    assert problem in failed.value.message and "'bad-hook'" in failed.value.message


async def test_a_webhook_that_is_down_fails_closed(runner: FilterRunner) -> None:
    hook = spec("down", "webhook", {"url": "http://127.0.0.1:9/hook", "timeout_seconds": 2})
    with pytest.raises(FilterFailedError) as failed:
        await run(runner, "inlet", [hook], "hello")
    assert "could not be reached" in failed.value.message


async def test_texts_longer_than_the_limit_are_not_sent(runner: FilterRunner, webhooks: Webhooks) -> None:
    sent = len(webhooks.received)
    hook = spec("audit", "webhook", {"url": f"{webhooks.url}/upper"})
    with pytest.raises(FilterFailedError) as failed:
        await run(runner, "inlet", [hook], "y" * 1001)
    assert "1001 characters" in failed.value.message and len(webhooks.received) == sent


async def test_the_url_policy_is_checked_before_every_call(http: httpx.AsyncClient, webhooks: Webhooks) -> None:
    strict = FilterRunner(http, allow_private_urls=False, max_text_chars=1000)
    relaxed = FilterRunner(http, allow_private_urls=True, max_text_chars=1000)
    sent = len(webhooks.received)
    metadata = spec("meta", "webhook", {"url": "https://169.254.169.254/latest/meta-data"})
    for runner in (strict, relaxed):
        with pytest.raises(FilterFailedError) as failed:
            await run(runner, "inlet", [metadata], "hello")
        assert "link-local" in failed.value.message
    local = spec("local", "webhook", {"url": f"{webhooks.url}/upper"})
    with pytest.raises(FilterFailedError) as failed:
        await run(strict, "inlet", [local], "hello")
    assert "https" in failed.value.message
    tls_local = spec("tls-local", "webhook", {"url": webhooks.url.replace("http://", "https://") + "/upper"})
    with pytest.raises(FilterFailedError) as failed:
        await run(strict, "inlet", [tls_local], "hello")
    assert "allow_private_urls" in failed.value.message
    assert len(webhooks.received) == sent


@pytest.fixture
def registry_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The real registry (``registry_service``), allowed to accept this test's loopback webhook."""
    monkeypatch.setenv("MODELHUB_REGISTRY_ALLOW_PRIVATE_URLS", "true")
    url: str = request.getfixturevalue("registry_service")
    return url


async def test_filters_load_from_a_real_registry(
    registry_url: str, make_token: Callable[..., str], http: httpx.AsyncClient, webhooks: Webhooks
) -> None:
    registry_service = registry_url
    admin = {"Authorization": f"Bearer {make_token('root', 'admin')}"}
    bodies = [
        {"id": "no-emails", "kind": "redact", "config": {"patterns": ["email"]}, "direction": "inlet"},
        {"id": "no-keys", "kind": "block", "config": {"patterns": ["api_key"], "message": "no keys"}},
        {
            "id": "audit",
            "kind": "webhook",
            "direction": "outlet",
            "config": {"url": f"{webhooks.url}/upper", "secret": HOOK_SECRET},
        },
        {"id": "off", "kind": "append", "config": {"text": "x"}, "enabled": False},
    ]
    for body in bodies:
        response = await http.post(f"{registry_service}/api/v1/filters", json=body, headers=admin)
        assert response.status_code == 201, response.text

    client = RegistryClient(http, registry_service, lambda: make_token("chat-gateway", "admin"))
    loaded = await client.filter_configs(["audit", "ghost", "no-emails", "off", "no-keys", "audit"])
    assert [body["id"] for body in loaded] == ["audit", "no-emails", "no-keys"]
    assert await client.filter_configs([]) == []
    filters = [FilterSpec.from_registry(body) for body in loaded]

    runner = FilterRunner(http, allow_private_urls=True, max_text_chars=1000)
    text, notices = await run(runner, "inlet", filters, "write to bob@example.com")
    assert text == "write to [redacted]" and [n.filter_id for n in notices] == ["no-emails"]
    with pytest.raises(FilterBlockedError, match="no keys"):
        await run(runner, "inlet", filters, "use sk-" + "b" * 30)
    text, _ = await run(runner, "outlet", filters, "mail me at bob@example.com")
    assert text == "MAIL ME AT BOB@EXAMPLE.COM"  # redact is inlet-only; the webhook (outlet) saw the secret
    assert webhooks.authorizations[-1] == f"Bearer {HOOK_SECRET}"

    user = RegistryClient(http, registry_service, lambda: make_token("alice", "user"))
    with pytest.raises(GatewayError, match="refused"):
        await user.filter_configs(["audit"])
