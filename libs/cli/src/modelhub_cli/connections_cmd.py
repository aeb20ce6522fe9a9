"""``modelhub connections ...`` and ``modelhub base-models list``: where base models come from."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from modelhub_cli import render
from modelhub_cli.session import AsJson, open_client, registry_app

connections_app = registry_app(
    "Connections to Ollama or OpenAI-compatible servers; their models become base models (admin only)."
)
base_models_app = registry_app("Base models: what model files are built on (from connections, pulls, or by hand).")

ConnectionId = Annotated[
    str, typer.Argument(metavar="ID", help="the connection's id, as `modelhub connections list` shows it")
]


class ConnectionType(StrEnum):
    ollama = "ollama"
    openai = "openai"


@connections_app.command("add")
def add_connection(
    ctx: typer.Context,
    type_: Annotated[ConnectionType, typer.Option("--type", help="the server's API")],
    url: Annotated[str, typer.Option("--url", help="the server's base URL, e.g. http://127.0.0.1:11434")],
    name: Annotated[str | None, typer.Option("--name", help="a name to tell it apart (default: the URL)")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="sent to the server; the registry never shows it again")
    ] = None,
) -> None:
    """Add a server whose models become base models; the registry lists them now and then on a timer.

    Example: modelhub connections add --type ollama --url http://127.0.0.1:11434 --name local-ollama
    """
    with open_client(ctx) as client:
        connection = client.add_connection(type_=type_.value, url=url, name=name, api_key=api_key)
    render.success(f"added connection '{connection.get('id')}' ({connection.get('name')})")


@connections_app.command("list")
def list_connections(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the connections, with when each was last listed and its last error (API keys are never shown).

    Example: modelhub connections list
    """
    with open_client(ctx) as client:
        connections = client.connections()
    if as_json:
        render.print_json({"items": connections})
        return
    columns = ["id", "type", "name", "url", "api key", "last synced", "last error"]
    rows = (
        [
            c.get("id"),
            c.get("type"),
            c.get("name"),
            c.get("url"),
            c.get("has_api_key"),
            c.get("last_synced_at"),
            c.get("last_error"),
        ]
        for c in connections
    )
    render.show(render.table(columns, rows, title="connections"))


@connections_app.command("sync")
def sync_connection(ctx: typer.Context, connection_id: ConnectionId, as_json: AsJson = False) -> None:
    """List a connection's models now and update the base models from them.

    Example: modelhub connections sync 3f2a9c
    """
    with open_client(ctx) as client:
        result = client.sync_connection(connection_id)
    if as_json:
        render.print_json(result)
        return
    added = render.cell(result.get("added"))
    gone = render.cell(result.get("unavailable"))
    render.success(f"synced '{connection_id}': {result.get('models')} models; added: {added}; now unavailable: {gone}")


@connections_app.command("rm")
def remove_connection(ctx: typer.Context, connection_id: ConnectionId) -> None:
    """Remove a connection.

    Example: modelhub connections rm 3f2a9c
    """
    with open_client(ctx) as client:
        client.delete_connection(connection_id)
    render.success(f"removed connection '{connection_id}'")


@base_models_app.command("list")
def list_base_models(
    ctx: typer.Context,
    all_models: Annotated[bool, typer.Option("--all", help="include base models that are unavailable now")] = False,
    as_json: AsJson = False,
) -> None:
    """List the base models model files can be built on.

    Example: modelhub base-models list --all
    """
    with open_client(ctx) as client:
        items = client.base_models(include_unavailable=all_models)
    if as_json:
        render.print_json({"items": items})
        return
    columns = ["id", "name", "source", "available", "family", "size", "quantization", "capabilities"]
    rows = []
    for item in items:
        details = item.get("details") or {}
        capabilities = [key for key, on in (item.get("capabilities") or {}).items() if on is True]
        rows.append(
            [
                item.get("id"),
                item.get("name"),
                item.get("source"),
                item.get("available"),
                details.get("family"),
                details.get("parameter_size") or details.get("size"),
                details.get("quantization_level") or details.get("quantization"),
                capabilities,
            ]
        )
    render.show(render.table(columns, rows, title="base models"))
