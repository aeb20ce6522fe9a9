"""``modelhub tools ...``: tool servers (MCP or OpenAPI) whose tools model files use through ``meta.toolIds``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from modelhub_cli import render
from modelhub_cli.client import RegistryClient
from modelhub_cli.errors import ApiError
from modelhub_cli.session import AsJson, open_client, registry_app

app = registry_app(
    "Tool servers (MCP or OpenAPI) the chat gateway runs tools on; model files name them in meta.toolIds"
    " (adding, removing and refreshing is for admins)."
)

ServerId = Annotated[str, typer.Argument(metavar="ID", help="the tool server's id, as `modelhub tools list` shows it")]


class Kind(StrEnum):
    mcp = "mcp"
    openapi = "openapi"


class Auth(StrEnum):
    none = "none"
    bearer = "bearer"
    forward = "forward"


def _parameters(schema: Any) -> str:
    """``name: type`` per argument, required ones marked with ``*``."""
    if not isinstance(schema, dict):
        return "-"
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parts = []
    for name, prop in properties.items():
        kind = prop.get("type", "any") if isinstance(prop, dict) else "any"
        parts.append(f"{name}{'*' if name in required else ''}: {render.cell(kind)}")
    return ", ".join(parts) or "-"


@app.command("add")
def add_tool_server(
    ctx: typer.Context,
    server_id: Annotated[str, typer.Argument(metavar="ID", help="a slug model files use: a-z, 0-9, '.', '_', '-'")],
    kind: Annotated[Kind, typer.Option("--kind", help="mcp (streamable HTTP) or openapi")],
    url: Annotated[
        str, typer.Option("--url", help="the MCP endpoint (http://host:8000/mcp) or the OpenAPI document URL")
    ],
    name: Annotated[str | None, typer.Option("--name", help="shown to users (default: the id)")] = None,
    description: Annotated[str, typer.Option("--description", help="what the tools are for")] = "",
    auth: Annotated[
        Auth, typer.Option("--auth", help="none; bearer (send --secret); forward (send the user's own token)")
    ] = Auth.none,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="MODELHUB_TOOL_SECRET",
            help="bearer secret for --auth bearer (or set MODELHUB_TOOL_SECRET); never shown again",
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAPI: where operations are called (default: the document's)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="seconds a tool call may take (default 10)")
    ] = None,
    max_result_bytes: Annotated[
        int | None, typer.Option("--max-result-bytes", help="longer results are cut (default 65536)")
    ] = None,
    user: Annotated[list[str] | None, typer.Option("--user", help="only these users may use it (repeatable)")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="only these groups may use it (repeatable)")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Register a tool server and list its tools now. Without --user/--group every user may use it.

    Example: modelhub tools add calc --kind mcp --url http://127.0.0.1:8000/mcp --name Calculator
    """
    body: dict[str, Any] = {"id": server_id, "kind": kind.value, "url": url, "auth": auth.value}
    optional = {
        "name": name,
        "description": description or None,
        "secret": secret,
        "base_url": base_url,
        "timeout_seconds": timeout,
        "max_result_bytes": max_result_bytes,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if user or group:
        body["access_control"] = {"read": {"user_ids": user or [], "group_ids": group or []}}
    with open_client(ctx) as client:
        server = client.add_tool_server(body)
    if as_json:
        render.print_json(server)
        return
    tools = server.get("tools") or []
    render.success(f"added tool server '{server.get('id')}' with {len(tools)} tools")
    if server.get("last_error"):
        render.note(
            f"its tools could not be listed: {server['last_error']}\n"
            f"fix the server (or the registration) and run `modelhub tools refresh {server_id}`"
        )


@app.command("list")
def list_tool_servers(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the tool servers: kind, URL, how many tools, when they were last listed and the last error.

    Example: modelhub tools list
    """
    with open_client(ctx) as client:
        servers = client.tool_servers()
    if as_json:
        render.print_json({"items": servers})
        return
    columns = ["id", "kind", "url", "tools", "refreshed", "error"]
    rows = (
        [s.get("id"), s.get("kind"), s.get("url"), s.get("tools"), s.get("refreshed_at"), s.get("error")]
        for s in servers
    )
    render.show(render.table(columns, rows, title="tool servers"))


@app.command("show")
def show_tool_server(ctx: typer.Context, server_id: ServerId, as_json: AsJson = False) -> None:
    """Show one tool server and each of its tools with its parameters (* = required).

    Admins see the registration; other users see the servers they may use.

    Example: modelhub tools show calc
    """
    with open_client(ctx) as client:
        server = _show_any(client, server_id)
    if as_json:
        render.print_json(server)
        return
    pairs = [
        ("id", server.get("id")),
        ("name", server.get("name")),
        ("kind", server.get("kind")),
        ("description", server.get("description")),
    ]
    if "url" in server:
        pairs += [("url", server.get("url")), ("auth", server.get("auth")), ("version", server.get("version"))]
    pairs += [("refreshed", server.get("refreshed_at")), ("error", server.get("last_error", server.get("error")))]
    render.show(render.key_values(pairs))
    tools = server.get("tools") or []
    rows = ([t.get("name"), _parameters(t.get("parameters")), t.get("description")] for t in tools)
    render.show(render.table(["tool", "parameters", "description"], rows, title=f"{len(tools)} tools"))


def _show_any(client: RegistryClient, server_id: str) -> dict[str, Any]:
    """The admin view when the caller is an admin, else the view of a server the caller may use."""
    try:
        server: dict[str, Any] = client.tool_server(server_id)
    except ApiError as exc:
        if exc.status != 403:
            raise
        server = client.usable_tools(server_id)
    return server


@app.command("refresh")
def refresh_tool_server(ctx: typer.Context, server_id: ServerId) -> None:
    """List a tool server's tools again now (the registry also does it on a timer).

    Example: modelhub tools refresh calc
    """
    with open_client(ctx) as client:
        server = client.refresh_tool_server(server_id)
    if server.get("last_error"):
        render.note(f"'{server_id}': its tools could not be listed: {server['last_error']}")
        raise typer.Exit(1)
    render.success(f"refreshed '{server_id}': {len(server.get('tools') or [])} tools (version {server.get('version')})")


@app.command("rm")
def remove_tool_server(ctx: typer.Context, server_id: ServerId) -> None:
    """Remove a tool server. Model files naming it keep the id; their chats no longer get its tools.

    Example: modelhub tools rm calc
    """
    with open_client(ctx) as client:
        client.delete_tool_server(server_id)
    render.success(f"removed tool server '{server_id}'")
