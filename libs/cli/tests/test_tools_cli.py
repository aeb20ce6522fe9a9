"""``modelhub tools ...`` against a real registry and real MCP / OpenAPI tool servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelhub_devstack.tool_servers import ToolServerEndpoint

if TYPE_CHECKING:
    from conftest import LiveRegistry


def body_rows(table: str) -> list[list[str]]:
    """The cells of each body row of a rich table (rows are drawn with "│")."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]


def test_add_list_show_refresh_rm(live_registry: LiveRegistry, mcp_tool_server: ToolServerEndpoint) -> None:
    assert mcp_tool_server.token is not None
    added = live_registry.ok(
        "tools",
        "add",
        "calc",
        "--kind",
        "mcp",
        "--url",
        mcp_tool_server.url,
        "--name",
        "Calculator",
        "--auth",
        "bearer",
        "--secret",
        mcp_tool_server.token,
    )
    assert "added tool server 'calc' with 6 tools" in added

    rows = body_rows(live_registry.ok("tools", "list"))
    assert [(row[0], row[1], row[2], row[3], row[5]) for row in rows] == [
        ("calc", "mcp", mcp_tool_server.url, "6", "-")
    ]
    assert mcp_tool_server.token not in live_registry.ok("tools", "list", "--json")

    shown = live_registry.ok("tools", "show", "calc")
    tools = {row[0]: row for row in body_rows(shown) if len(row) == 3}
    assert set(tools) == {"add", "echo", "sleep", "big", "fail", "whoami"}
    assert tools["add"][1] == "a*: integer, b*: integer"
    assert tools["add"][2] == "Add two integers."
    assert "Calculator" in shown and mcp_tool_server.token not in shown

    assert "refreshed 'calc': 6 tools (version 1)" in live_registry.ok("tools", "refresh", "calc")
    assert "removed tool server 'calc'" in live_registry.ok("tools", "rm", "calc")
    missing = live_registry.fails("tools", "show", "calc")
    assert "calc" in missing and "does not exist" in missing


def test_a_server_that_cannot_be_listed_says_what_to_do(
    live_registry: LiveRegistry, mcp_tool_server: ToolServerEndpoint
) -> None:
    result = live_registry.run("tools", "add", "locked", "--kind", "mcp", "--url", mcp_tool_server.url)
    assert result.exit_code == 0, result.output
    assert "401" in result.output and "modelhub tools refresh locked" in result.output
    refresh = live_registry.fails("tools", "refresh", "locked")
    assert "401" in refresh


def test_users_see_what_they_may_use_and_cannot_change_it(
    live_registry: LiveRegistry,
    openapi_tool_server_open: ToolServerEndpoint,
    make_token: Callable[..., str],
) -> None:
    live_registry.ok("tools", "add", "web", "--kind", "openapi", "--url", openapi_tool_server_open.url)
    live_registry.ok(
        "tools", "add", "private", "--kind", "openapi", "--url", openapi_tool_server_open.url, "--user", "carol"
    )
    bob = make_token("bob", "user")
    shown = json.loads(live_registry.ok("tools", "show", "web", "--json", token=bob))
    assert set(shown) == {"id", "name", "description", "kind", "tools", "refreshed_at", "error"}
    hidden = live_registry.fails("tools", "show", "private", token=bob)
    assert "does not exist or you cannot use it" in hidden
    carol = make_token("carol", "user")
    assert "get_item" in live_registry.ok("tools", "show", "private", token=carol)

    refused = live_registry.fails("tools", "add", "mine", "--kind", "mcp", "--url", "http://127.0.0.1:9/mcp", token=bob)
    assert "admin" in refused.lower()


def test_bad_input_is_refused_with_the_field_named(live_registry: LiveRegistry) -> None:
    bad_id = live_registry.fails("tools", "add", "Bad Id", "--kind", "mcp", "--url", "http://127.0.0.1:9/mcp")
    assert "id" in bad_id
    no_secret = live_registry.fails(
        "tools", "add", "x", "--kind", "mcp", "--url", "http://127.0.0.1:9/mcp", "--auth", "bearer"
    )
    assert "secret" in no_secret
    metadata = live_registry.fails("tools", "add", "x", "--kind", "mcp", "--url", "http://169.254.169.254/mcp")
    assert "link-local" in metadata
    assert "tools" in live_registry.ok("tools", "--help")
