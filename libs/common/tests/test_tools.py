"""Tool server client (modelhub_common.tools) against real MCP and OpenAPI server processes (devstack fixtures)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from modelhub_common.tools import (
    McpSessionCache,
    ToolServerConfig,
    ToolServerError,
    ToolSpec,
    call_tool,
    config_from_credentials,
    discover,
    validate_arguments,
)
from modelhub_devstack.ports import pick_free_port
from modelhub_devstack.tool_servers import ToolServerEndpoint

TOOL_NAMES = {"add", "echo", "sleep", "big", "fail", "whoami"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def mcp_config(server: ToolServerEndpoint, **changes: object) -> ToolServerConfig:
    config = ToolServerConfig(
        kind="mcp", url=server.url, auth="bearer", secret=server.token, allow_private_urls=True, timeout_seconds=10
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def openapi_config(server: ToolServerEndpoint, **changes: object) -> ToolServerConfig:
    config = ToolServerConfig(
        kind="openapi", url=server.url, auth="bearer", secret=server.token, allow_private_urls=True, timeout_seconds=10
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


async def specs_of(config: ToolServerConfig, http: httpx.AsyncClient) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in await discover(config, http=http)}


# --- MCP ------------------------------------------------------------------------------------------------


async def test_mcp_discovery_lists_tools_with_schemas(
    mcp_tool_server: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    specs = await specs_of(mcp_config(mcp_tool_server), http)
    assert TOOL_NAMES <= set(specs)
    add = specs["add"]
    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert set(add.parameters["required"]) == {"a", "b"}
    assert ToolSpec.from_dict(add.to_dict()) == add


async def test_mcp_discovery_without_the_token_names_the_auth_problem(
    mcp_tool_server: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ToolServerError, match="401.*auth and secret"):
        await discover(mcp_config(mcp_tool_server, auth="none", secret=None), http=http)


async def test_mcp_calls_answer_results_and_failures(
    mcp_tool_server: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = mcp_config(mcp_tool_server)
    specs = await specs_of(config, http)

    added = await call_tool(config, specs["add"], {"a": 2, "b": 40}, http=http)
    assert (added.ok, added.content, added.error_code, added.truncated) == (True, "42", None, False)

    echoed = await call_tool(config, specs["echo"], {"text": "grüß dich"}, http=http)
    assert echoed.ok and echoed.content == "grüß dich"

    who = await call_tool(config, specs["whoami"], {}, http=http)
    assert who.content == f"Bearer {mcp_tool_server.token}"

    failed = await call_tool(config, specs["fail"], {"message": "disk on fire"}, http=http)
    assert not failed.ok and failed.error_code == "tool_error"
    assert "disk on fire" in failed.content


async def test_mcp_forward_auth_sends_the_callers_token(
    mcp_tool_server: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = mcp_config(mcp_tool_server, auth="forward", secret=None)
    specs = {s.name: s for s in await discover(config, caller_token=mcp_tool_server.token, http=http)}
    spec = specs["whoami"]
    who = await call_tool(config, spec, {}, caller_token=mcp_tool_server.token, http=http)
    assert who.ok and who.content == f"Bearer {mcp_tool_server.token}"

    refused = await call_tool(config, spec, {}, caller_token="someone-else", http=http)
    assert not refused.ok and refused.error_code == "unreachable"
    assert "401" in refused.content


async def test_mcp_long_results_are_cut_and_say_so(
    mcp_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = mcp_config(mcp_tool_server_open, auth="none", secret=None, max_result_bytes=1000)
    specs = await specs_of(config, http)
    outcome = await call_tool(config, specs["big"], {"n": 5000}, http=http)
    assert outcome.ok and outcome.truncated
    assert outcome.content.startswith("x" * 1000)
    assert "x" * 1001 not in outcome.content
    assert "cut to 1000 of 5000 bytes" in outcome.content

    short = await call_tool(config, specs["big"], {"n": 1000}, http=http)
    assert short.ok and not short.truncated and short.content == "x" * 1000


async def test_mcp_timeout_covers_the_whole_call(
    mcp_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    specs = await specs_of(mcp_config(mcp_tool_server_open, auth="none"), http)
    config = mcp_config(mcp_tool_server_open, auth="none", timeout_seconds=0.5)
    outcome = await call_tool(config, specs["sleep"], {"seconds": 30}, http=http)
    assert not outcome.ok and outcome.error_code == "timeout"
    assert "0.5 s" in outcome.content


async def test_arguments_are_validated_before_calling(
    mcp_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = mcp_config(mcp_tool_server_open, auth="none")
    specs = await specs_of(config, http)
    wrong_type = await call_tool(config, specs["add"], {"a": "two", "b": 1}, http=http)
    assert wrong_type.error_code == "invalid_arguments" and "a:" in wrong_type.content
    missing = await call_tool(config, specs["add"], {"a": 1}, http=http)
    assert missing.error_code == "invalid_arguments" and "b: is required" in missing.content
    assert validate_arguments(specs["add"], [1, 2]) == "arguments of add must be a JSON object, not list"
    assert validate_arguments(specs["add"], {"a": 1, "b": 2}) is None


async def test_mcp_unreachable_and_refused_urls_are_outcomes(http: httpx.AsyncClient) -> None:
    spec = ToolSpec(name="add", description="", parameters={"type": "object"})
    closed = ToolServerConfig(kind="mcp", url=f"http://127.0.0.1:{pick_free_port()}/mcp", allow_private_urls=True)
    outcome = await call_tool(closed, spec, {}, http=http)
    assert not outcome.ok and outcome.error_code == "unreachable"
    with pytest.raises(ToolServerError, match="could not reach"):
        await discover(closed, http=http)

    private = dataclasses.replace(closed, allow_private_urls=False)
    refused = await call_tool(private, spec, {}, http=http)
    assert refused.error_code == "unreachable" and "allow_private_urls" in refused.content
    with pytest.raises(ToolServerError, match="allow_private_urls") as caught:
        await discover(private, http=http)
    assert caught.value.code == "url_not_allowed"

    metadata = ToolServerConfig(kind="mcp", url="http://169.254.169.254/mcp", allow_private_urls=True)
    with pytest.raises(ToolServerError, match="link-local"):
        await discover(metadata, http=http)


async def test_session_cache_reuses_sessions_per_credential(
    mcp_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = mcp_config(mcp_tool_server_open, auth="forward", secret=None)
    specs = await specs_of(config, http)
    cache = McpSessionCache(http, max_sessions=4)
    try:
        results = await asyncio.gather(
            *(call_tool(config, specs["add"], {"a": i, "b": 1}, http=http, sessions=cache) for i in range(20))
        )
        assert [outcome.content for outcome in results] == [str(i + 1) for i in range(20)]
        for token in ("alice-token", "bob-token", "alice-token"):
            who = await call_tool(config, specs["whoami"], {}, caller_token=token, http=http, sessions=cache)
            assert who.content == f"Bearer {token}"
        failed = await call_tool(config, specs["fail"], {"message": "nope"}, http=http, sessions=cache)
        assert failed.error_code == "tool_error"
        again = await call_tool(config, specs["add"], {"a": 1, "b": 1}, http=http, sessions=cache)
        assert again.content == "2"
    finally:
        await cache.aclose()


async def test_without_a_shared_client_the_call_makes_its_own(mcp_tool_server: ToolServerEndpoint) -> None:
    config = mcp_config(mcp_tool_server)
    specs = {spec.name: spec for spec in await discover(config)}
    outcome = await call_tool(config, specs["add"], {"a": 1, "b": 2})
    assert outcome.ok and outcome.content == "3"


# --- OpenAPI --------------------------------------------------------------------------------------------


async def test_openapi_discovery_merges_parameters_and_resolves_refs(
    openapi_tool_server: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    specs = await specs_of(openapi_config(openapi_tool_server), http)
    assert TOOL_NAMES | {"get_item"} <= set(specs)
    add = specs["add"].parameters
    # The body is a $ref to components/schemas/AddRequest: its properties arrive resolved and merged.
    assert add["properties"]["a"] == {"type": "integer", "title": "A", "description": "first addend"}
    assert add["required"] == ["a", "b"]
    item = specs["get_item"].parameters
    assert item["properties"]["item_id"]["type"] == "integer"
    assert item["properties"]["verbose"]["type"] == "boolean"
    assert item["required"] == ["item_id"]
    assert specs["echo"].description == "Answer the text unchanged."
    assert "$ref" not in str(add)


async def test_openapi_calls_fill_path_query_and_body(
    openapi_tool_server: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = openapi_config(openapi_tool_server)
    specs = await specs_of(config, http)
    added = await call_tool(config, specs["add"], {"a": 5, "b": 6}, http=http)
    assert added.ok and added.content == "11"
    echoed = await call_tool(config, specs["echo"], {"text": "a&b=c"}, http=http)
    assert echoed.ok and echoed.content == '"a&b=c"'
    item = await call_tool(config, specs["get_item"], {"item_id": 7, "verbose": True}, http=http)
    assert item.ok and item.content == '{"item_id":7,"verbose":true}'
    who = await call_tool(config, specs["whoami"], {}, http=http)
    assert who.content == f'"Bearer {openapi_tool_server.token}"'


async def test_openapi_failures_are_outcomes(openapi_tool_server: ToolServerEndpoint, http: httpx.AsyncClient) -> None:
    config = openapi_config(openapi_tool_server)
    specs = await specs_of(config, http)
    failed = await call_tool(config, specs["fail"], {"message": "out of cheese"}, http=http)
    assert not failed.ok and failed.error_code == "tool_error"
    assert "HTTP 500" in failed.content and "out of cheese" in failed.content

    anonymous = dataclasses.replace(config, auth="none", secret=None)
    refused = await call_tool(anonymous, specs["add"], {"a": 1, "b": 1}, http=http)
    assert refused.error_code == "tool_error" and "HTTP 401" in refused.content

    slow = await call_tool(dataclasses.replace(config, timeout_seconds=0.5), specs["sleep"], {"seconds": 30}, http=http)
    assert slow.error_code == "timeout"

    cut = await call_tool(dataclasses.replace(config, max_result_bytes=100), specs["big"], {"n": 500}, http=http)
    assert cut.ok and cut.truncated and cut.content.startswith('"' + "x" * 99)
    assert "cut to 100 bytes" in cut.content


async def test_openapi_spec_without_binding_reads_the_document(
    openapi_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = openapi_config(openapi_tool_server_open, auth="none", secret=None)
    specs = await specs_of(config, http)
    bare = ToolSpec.from_dict({k: v for k, v in specs["add"].to_dict().items() if k != "operation"})
    assert bare.operation is None
    outcome = await call_tool(config, bare, {"a": 20, "b": 22}, http=http)
    assert outcome.ok and outcome.content == "42"

    ghost = ToolSpec(name="vanished", description="", parameters={"type": "object"})
    missing = await call_tool(config, ghost, {}, http=http)
    assert missing.error_code == "unknown_tool"


async def test_openapi_document_limits_and_bad_documents(
    openapi_tool_server_open: ToolServerEndpoint, mcp_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = openapi_config(openapi_tool_server_open, auth="none", secret=None)
    with pytest.raises(ToolServerError, match="larger than 200 bytes"):
        await discover(dataclasses.replace(config, max_document_bytes=200), http=http)
    not_a_document = dataclasses.replace(config, url=openapi_tool_server_open.url.replace("/openapi.json", "/nope"))
    with pytest.raises(ToolServerError, match="HTTP 404"):
        await discover(not_a_document, http=http)
    healthz = dataclasses.replace(config, url=openapi_tool_server_open.url.replace("/openapi.json", "/healthz"))
    with pytest.raises(ToolServerError, match="not a JSON OpenAPI document|not an OpenAPI document"):
        await discover(healthz, http=http)


async def test_openapi_base_url_overrides_the_document(
    openapi_tool_server_open: ToolServerEndpoint, http: httpx.AsyncClient
) -> None:
    config = openapi_config(openapi_tool_server_open, auth="none", secret=None)
    specs = await specs_of(config, http)
    elsewhere = dataclasses.replace(config, base_url=f"http://127.0.0.1:{pick_free_port()}")
    outcome = await call_tool(elsewhere, specs["add"], {"a": 1, "b": 1}, http=http)
    assert outcome.error_code == "unreachable"


# --- credentials ----------------------------------------------------------------------------------------


def test_config_from_credentials_reads_the_registry_answer() -> None:
    body = {
        "id": "tools",
        "kind": "openapi",
        "url": "https://tools.example.com/openapi.json",
        "base_url": None,
        "auth": "bearer",
        "secret": "s3cret",
        "timeout_seconds": 5,
        "max_result_bytes": 2048,
    }
    config = config_from_credentials(body, allow_private_urls=False)
    assert config == ToolServerConfig(
        kind="openapi",
        url="https://tools.example.com/openapi.json",
        auth="bearer",
        secret="s3cret",
        timeout_seconds=5.0,
        max_result_bytes=2048,
    )
    with pytest.raises(ToolServerError, match="kind must be"):
        config_from_credentials({**body, "kind": "grpc"}, allow_private_urls=False)
    with pytest.raises(ToolServerError, match="needs a secret"):
        config_from_credentials({**body, "secret": None}, allow_private_urls=False)
    with pytest.raises(ToolServerError, match="timeout_seconds"):
        config_from_credentials({**body, "timeout_seconds": 0}, allow_private_urls=False)
