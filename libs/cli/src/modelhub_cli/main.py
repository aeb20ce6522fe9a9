"""The ``modelhub`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelhub_cli import (
    admin_cmd,
    audit_cmd,
    chat_cmd,
    connections_cmd,
    filters_cmd,
    knowledge_cmd,
    models_cmd,
    pull_cmd,
    tools_cmd,
)
from modelhub_cli.endpoints import EndpointsError, load_endpoints
from modelhub_cli.status import SERVICES, check_all

app = typer.Typer(
    help="Manage modelhub: custom LLM model files, pulls, knowledge and chats.\n\n"
    "Endpoints and the token come from .modelhub/endpoints.env (written by `make up`) "
    "or from MODELHUB_* environment variables.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
app.add_typer(models_cmd.app, name="models")
app.add_typer(connections_cmd.connections_app, name="connections")
app.add_typer(connections_cmd.base_models_app, name="base-models")
app.add_typer(admin_cmd.users_app, name="users")
app.add_typer(admin_cmd.groups_app, name="groups")
app.add_typer(admin_cmd.tokens_app, name="tokens")
app.add_typer(pull_cmd.app)
app.add_typer(knowledge_cmd.app, name="knowledge")
app.add_typer(tools_cmd.app, name="tools")
app.add_typer(filters_cmd.app, name="filters")
app.add_typer(audit_cmd.app, name="audit")
app.command("chat", help="Chat with one or two models through the gateway.")(chat_cmd.chat)


@app.callback()
def main() -> None:
    """Manage modelhub: custom LLM model files, pulls, knowledge and chats."""


EnvFile = Annotated[
    Path | None,
    typer.Option("--env-file", help="endpoints file to read instead of .modelhub/endpoints.env", exists=False),
]


@app.command()
def status(env_file: EnvFile = None) -> None:
    """Show whether each service is ready, and what is failing if not."""
    try:
        endpoints = load_endpoints(env_file)
    except EndpointsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if endpoints.source is None and not any(endpoints.get(key) for _, key in SERVICES):
        console.print("[yellow]no running stack found: run `make up` (or set MODELHUB_*_URL variables)[/yellow]")
        raise typer.Exit(2)
    results = check_all(endpoints)
    table = Table(title="modelhub services")
    table.add_column("service")
    table.add_column("endpoint")
    table.add_column("state")
    table.add_column("details")
    for result in results:
        state = "[green]ready[/green]" if result.ready else "[red]not ready[/red]"
        table.add_row(result.name, result.url or "-", state, result.detail)
    console.print(table)
    if endpoints.get("MODELHUB_GATEWAY_GRPC"):
        console.print(f"gRPC gateway: {endpoints.get('MODELHUB_GATEWAY_GRPC')}")
    if not all(r.ready for r in results):
        hint = "run `make up` to start what is down, `make logs` to see why"
        console.print(f"[yellow]some services are not ready: {hint}[/yellow]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
