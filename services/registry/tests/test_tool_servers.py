"""Tool servers API against real MCP and OpenAPI server processes, PostgreSQL and NATS (devstack fixtures)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from modelhub_common.events import MODELS, decode_envelope
from modelhub_devstack.tool_servers import ToolServerEndpoint

if TYPE_CHECKING:
    from conftest import Registry

TOOL_NAMES = {"add", "echo", "sleep", "big", "fail", "whoami"}


@pytest.fixture
def reg(make_registry: Callable[..., Registry]) -> Registry:
    registry = make_registry(tool_refresh_seconds=0)
    registry.add_base()
    return registry


def add_server(reg: Registry, server: ToolServerEndpoint, server_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": server_id, "kind": server.kind, "url": server.url, **extra}
    if server.token and "auth" not in extra:
        body.update(auth="bearer", secret=server.token)
    response = reg.client.post("/api/v1/tool-servers", json=body, headers=reg.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def _tool_server_events(nats_url: str, since: datetime, server_id: str, want: int) -> list[tuple[str, Any]]:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            "modelhub.models.v1.>",
            durable=None,
            stream=MODELS.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat()),
        )
        found: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(found) < want:
            try:
                msgs = await sub.fetch(50, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                envelope = decode_envelope(msg.data)
                if envelope.subject_ids.tool_server_id == server_id:
                    found.append((msg.subject, envelope.tool_server_changed))
        return found
    finally:
        await nc.close()


def test_mcp_server_lifecycle_with_events(reg: Registry, mcp_tool_server: ToolServerEndpoint, nats_url: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = add_server(reg, mcp_tool_server, "calc", name="Calculator", description="sums")
    assert created["last_error"] is None and created["version"] == 1
    assert {tool["name"] for tool in created["tools"]} == TOOL_NAMES
    add = next(tool for tool in created["tools"] if tool["name"] == "add")
    assert add["parameters"]["properties"]["a"]["type"] == "integer"
    assert "secret" not in created and created["has_secret"] is True
    assert mcp_tool_server.token not in json.dumps(created)

    listed = reg.client.get("/api/v1/tool-servers", headers=reg.admin).json()["items"]
    assert [(row["id"], row["kind"], row["tools"], row["error"]) for row in listed] == [("calc", "mcp", 6, None)]

    patched = reg.client.patch("/api/v1/tool-servers/calc", json={"name": "Calc 2"}, headers=reg.admin).json()
    assert patched["name"] == "Calc 2" and patched["version"] == 2
    same = reg.client.patch("/api/v1/tool-servers/calc", json={"name": "Calc 2"}, headers=reg.admin).json()
    assert same["version"] == 2

    # Unchanged tools: refreshed, but no new version and no event.
    refreshed = reg.client.post("/api/v1/tool-servers/calc/refresh", headers=reg.admin).json()
    assert refreshed["version"] == 2 and refreshed["refreshed_at"] >= patched["refreshed_at"]

    assert reg.client.delete("/api/v1/tool-servers/calc", headers=reg.admin).status_code == 204
    assert reg.client.get("/api/v1/tool-servers/calc", headers=reg.admin).status_code == 404

    events = asyncio.run(_tool_server_events(nats_url, since, "calc", want=3))
    assert [(subject, payload.version, payload.kind, payload.deleted) for subject, payload in events] == [
        ("modelhub.models.v1.tool_server_created", 1, "mcp", False),
        ("modelhub.models.v1.tool_server_updated", 2, "mcp", False),
        ("modelhub.models.v1.tool_server_deleted", 2, "mcp", True),
    ]


def test_openapi_server_tools_and_credentials(reg: Registry, openapi_tool_server: ToolServerEndpoint) -> None:
    created = add_server(reg, openapi_tool_server, "web-tools", timeout_seconds=5, max_result_bytes=4096)
    names = {tool["name"] for tool in created["tools"]}
    assert TOOL_NAMES | {"get_item"} <= names
    item = next(tool for tool in created["tools"] if tool["name"] == "get_item")
    assert item["parameters"]["required"] == ["item_id"]

    credentials = reg.client.get("/api/v1/tool-servers/web-tools/credentials", headers=reg.admin)
    assert credentials.json() == {
        "id": "web-tools",
        "kind": "openapi",
        "url": openapi_tool_server.url,
        "base_url": None,
        "auth": "bearer",
        "secret": openapi_tool_server.token,
        "timeout_seconds": 5.0,
        "max_result_bytes": 4096,
    }
    alice = reg.as_user("alice")
    assert reg.client.get("/api/v1/tool-servers/web-tools/credentials", headers=alice).status_code == 403


def test_a_discovery_failure_is_stored_and_shown(reg: Registry, mcp_tool_server: ToolServerEndpoint) -> None:
    created = add_server(reg, mcp_tool_server, "locked", auth="none")
    assert created["tools"] == [] and "401" in created["last_error"]
    fixed = reg.client.patch(
        "/api/v1/tool-servers/locked", json={"auth": "bearer", "secret": mcp_tool_server.token}, headers=reg.admin
    ).json()
    assert fixed["last_error"] is None and len(fixed["tools"]) == 6 and fixed["version"] == 2
    user_view = reg.client.get("/api/v1/tools/locked", headers=reg.as_user("bob")).json()
    assert user_view["error"] is None and len(user_view["tools"]) == 6


def test_access_control_decides_who_sees_a_server(
    reg: Registry, mcp_tool_server_open: ToolServerEndpoint, openapi_tool_server_open: ToolServerEndpoint
) -> None:
    add_server(reg, mcp_tool_server_open, "open-to-all")
    add_server(
        reg,
        openapi_tool_server_open,
        "team-only",
        access_control={"read": {"user_ids": ["carol"], "group_ids": ["team"]}},
    )
    stranger, carol, member = reg.as_user("dave"), reg.as_user("carol"), reg.as_user("erin", groups=("team",))

    assert [s["id"] for s in reg.client.get("/api/v1/tools", headers=stranger).json()["items"]] == ["open-to-all"]
    missing = reg.client.get("/api/v1/tools/team-only", headers=stranger)
    ghost = reg.client.get("/api/v1/tools/no-such-server", headers=stranger)
    assert missing.status_code == ghost.status_code == 404
    assert missing.json()["error"]["message"].replace("team-only", "X") == ghost.json()["error"]["message"].replace(
        "no-such-server", "X"
    )
    assert "you cannot use it" in missing.json()["error"]["message"]

    for allowed in (carol, member, reg.admin):
        items = reg.client.get("/api/v1/tools", headers=allowed).json()["items"]
        assert [s["id"] for s in items] == ["open-to-all", "team-only"]
    one = reg.client.get("/api/v1/tools/team-only", headers=carol).json()
    assert set(one) == {"id", "name", "description", "kind", "tools", "refreshed_at", "error"}
    assert {tool["name"] for tool in one["tools"]} >= TOOL_NAMES
    assert all(set(tool) >= {"name", "description", "parameters"} for tool in one["tools"])

    # Opening it to everyone is a change like any other.
    reg.client.patch("/api/v1/tool-servers/team-only", json={"access_control": None}, headers=reg.admin)
    assert reg.client.get("/api/v1/tools/team-only", headers=stranger).status_code == 200


def test_admin_routes_refuse_normal_users_and_anonymous_callers(reg: Registry) -> None:
    alice = reg.as_user("alice")
    body = {"id": "x", "kind": "mcp", "url": "http://127.0.0.1:1/mcp"}
    for method, path in [
        ("post", "/api/v1/tool-servers"),
        ("get", "/api/v1/tool-servers"),
        ("get", "/api/v1/tool-servers/x"),
        ("patch", "/api/v1/tool-servers/x"),
        ("delete", "/api/v1/tool-servers/x"),
        ("post", "/api/v1/tool-servers/x/refresh"),
        ("get", "/api/v1/tool-servers/x/credentials"),
    ]:
        kwargs: dict[str, Any] = {"json": body} if method in ("post", "patch") else {}
        assert reg.client.request(method, path, headers=alice, **kwargs).status_code == 403, path
        assert reg.client.request(method, path, **kwargs).status_code == 401, path
    assert reg.client.get("/api/v1/tools").status_code == 401


def test_bad_registrations_are_refused_and_nothing_is_stored(
    make_registry: Callable[..., Registry], mcp_tool_server_open: ToolServerEndpoint
) -> None:
    reg = make_registry(tool_refresh_seconds=0)
    url = mcp_tool_server_open.url

    def post(**body: Any) -> Any:
        return reg.client.post("/api/v1/tool-servers", json={"kind": "mcp", "url": url, **body}, headers=reg.admin)

    cases = [
        ({"id": "Bad Id"}, "id"),
        ({"id": "ok", "kind": "grpc"}, "kind"),
        ({"id": "ok", "auth": "bearer"}, "secret"),
        ({"id": "ok", "secret": "s"}, "secret"),
        ({"id": "ok", "timeout_seconds": 0}, "timeout_seconds"),
        ({"id": "ok", "max_result_bytes": 10**9}, "max_result_bytes"),
        ({"id": "ok", "base_url": "http://127.0.0.1:9"}, "base_url"),
        ({"id": "ok", "url": "ftp://example.com/x"}, "url"),
        ({"id": "ok", "url": "http://169.254.169.254/mcp"}, "link-local"),
        ({"id": "ok", "access_control": {"read": {"user_ids": "alice"}}}, "access_control"),
    ]
    for body, named in cases:
        response = post(**body)
        assert response.status_code == 422, (body, response.text)
        assert named in response.text, (body, response.text)
    assert reg.client.get("/api/v1/tool-servers", headers=reg.admin).json()["items"] == []
    assert post(id="ok").status_code == 201
    assert post(id="ok").status_code == 409

    strict = make_registry(tool_refresh_seconds=0, allow_private_urls=False)
    refused = strict.client.post(
        "/api/v1/tool-servers", json={"id": "local", "kind": "mcp", "url": url}, headers=strict.admin
    )
    assert refused.status_code == 422 and "allow_private_urls" in refused.text

    port = url.split(":")[2].split("/")[0]
    listed = make_registry(tool_refresh_seconds=0, tool_server_allowed_hosts=("tools.example.com", "*.corp.example"))
    off_list = listed.client.post(
        "/api/v1/tool-servers", json={"id": "local", "kind": "mcp", "url": url}, headers=listed.admin
    )
    assert off_list.status_code == 422 and "tool_server_allowed_hosts" in off_list.text
    assert listed.client.get("/api/v1/tool-servers", headers=listed.admin).json()["items"] == []
    on_list = make_registry(tool_refresh_seconds=0, tool_server_allowed_hosts=(f"127.0.0.1:{port}",))
    allowed = on_list.client.post(
        "/api/v1/tool-servers", json={"id": "local", "kind": "mcp", "url": url}, headers=on_list.admin
    )
    assert allowed.status_code == 201, allowed.text


def test_the_number_of_servers_is_limited(
    make_registry: Callable[..., Registry], mcp_tool_server_open: ToolServerEndpoint
) -> None:
    reg = make_registry(tool_refresh_seconds=0, max_tool_servers=1, max_tools_per_server=3)
    only = add_server(reg, mcp_tool_server_open, "first")
    assert only["tools"] == [] and "limit is 3" in only["last_error"]
    second = reg.client.post(
        "/api/v1/tool-servers",
        json={"id": "second", "kind": "mcp", "url": mcp_tool_server_open.url},
        headers=reg.admin,
    )
    assert second.status_code == 409 and "max_tool_servers" in second.text


def test_model_files_naming_unknown_tool_servers_warn(reg: Registry, mcp_tool_server_open: ToolServerEndpoint) -> None:
    add_server(reg, mcp_tool_server_open, "calc")
    alice = reg.as_user("alice")
    created = reg.create(alice, id="helper", meta={"toolIds": ["calc", "server:mcp:calc", "server:nope", "ghost"]})
    assert created["meta"]["tool_ids"] == ["calc", "server:mcp:calc", "server:nope", "ghost"]
    assert [w["message"].split("'")[1] for w in created["warnings"]] == ["server:nope", "ghost"]

    quiet = reg.create(alice, id="quiet", meta={"toolIds": ["server:calc"]})
    assert "warnings" not in quiet

    patched = reg.client.patch("/api/v1/models/quiet", json={"meta": {"toolIds": ["missing"]}}, headers=alice)
    assert patched.status_code == 200
    assert [w["field"] for w in patched.json()["warnings"]] == ["meta.toolIds"]

    document = [
        {"id": "imported", "base_model_id": "llama3.1:8b", "name": "I", "meta": {"toolIds": ["calc", "absent"]}}
    ]
    report = reg.client.post("/api/v1/models/import", json=document, headers=alice).json()
    assert report["created"] == ["imported"]
    assert [(w["id"], "absent" in w["message"]) for w in report["warnings"]] == [("imported", True)]


def test_patching_camel_case_meta_lists_changes_them(reg: Registry) -> None:
    alice = reg.as_user("alice")
    reg.create(alice, id="patchy", meta={"toolIds": ["a"], "filterIds": ["f"], "actionIds": ["x"]})
    patch = {"meta": {"toolIds": ["b", "c"], "filterIds": ["g"], "defaultFilterIds": ["g"], "actionIds": None}}
    response = reg.client.patch("/api/v1/models/patchy", json=patch, headers=alice)
    assert response.status_code == 200, response.text
    meta = reg.client.get("/api/v1/models/patchy", headers=alice).json()["meta"]
    # Stored (and answered) under the snake_case names, with no second camelCase copy.
    assert meta["tool_ids"] == ["b", "c"]
    assert meta["filter_ids"] == ["g"] and meta["default_filter_ids"] == ["g"]
    assert meta["action_ids"] == []
    assert not {"toolIds", "filterIds", "defaultFilterIds", "actionIds"} & set(meta)
    revisions = reg.client.get("/api/v1/models/patchy/revisions", headers=alice).json()["items"]
    latest = max(revisions, key=lambda r: r["version"])
    assert {"meta.tool_ids", "meta.filter_ids", "meta.action_ids"} <= set(latest["changed_fields"])
