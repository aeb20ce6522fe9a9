"""``modelhub-dev``: the one-command local stack (NATS, PostgreSQL+pgvector, S3 and every service)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from modelhub_devstack.errors import DevstackError
from modelhub_devstack.processes import log_tail
from modelhub_devstack.stack import ComponentState, ComponentStatus, Stack
from modelhub_devstack.state import HOME_ENV

app = typer.Typer(
    name="modelhub-dev",
    help=(
        "Run the whole modelhub stack locally with real servers: NATS with JetStream, PostgreSQL with "
        "pgvector, an S3 store (SeaweedFS) and the registry, puller, rag and chat-gateway services.\n\n"
        f"State (ports, secrets, data, logs) lives in ./.modelhub, or in ${HOME_ENV} if set."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)

# Piped output (make, CI logs) would otherwise be squeezed to 80 columns and fold every path.
_PIPED_WIDTH = 160
console = Console(highlight=False, width=None if sys.stdout.isatty() else _PIPED_WIDTH)
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else _PIPED_WIDTH)

_STATE_STYLES = {
    ComponentState.STARTED: "green",
    ComponentState.RUNNING: "green",
    ComponentState.STOPPED: "yellow",
    ComponentState.NOT_RUNNING: "dim",
    ComponentState.FAILED: "bold red",
    ComponentState.NOT_INSTALLED: "bold red",
}


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@app.callback()
def _configure() -> None:
    # Library warnings (say, "restarting an unresponsive server") go to stderr; chatter stays quiet.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False, show_time=False)],
    )


def _progress(message: str) -> None:
    console.print(f"[cyan]→[/cyan] {escape(message)}")


def _fail(message: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/bold red] {escape(message)}")
    return typer.Exit(code=1)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _status_table(title: str, statuses: Sequence[ComponentStatus]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Component", style="bold", no_wrap=True)
    table.add_column("Endpoint", overflow="fold")
    table.add_column("State", no_wrap=True)
    table.add_column("Log", style="dim", overflow="fold")
    for status in statuses:
        style = _STATE_STYLES[status.state]
        table.add_row(
            escape(status.name),
            escape(status.endpoint),
            f"[{style}]{status.state.value}[/{style}]",
            escape(_relative(status.log_path)),
        )
    return table


def _print_problems(statuses: Sequence[ComponentStatus]) -> bool:
    problems = [status for status in statuses if not status.ok]
    for status in problems:
        errors.print(f"\n[bold red]{escape(status.name)} {status.state.value}:[/bold red]")
        errors.print(escape(status.detail), markup=True)
    return bool(problems)


@app.command()
def up(
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Log level the services run with.", case_sensitive=False)
    ] = LogLevel.INFO,
    monitoring: Annotated[
        bool, typer.Option("--monitoring", help="Also start a Prometheus that scrapes the services' /metrics.")
    ] = False,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Three NATS JetStream nodes (streams at R3) and two replicas of each service, each on its own "
            "port; endpoints.env lists every NATS URL and replica. The stack stays a cluster until `clean`.",
        ),
    ] = False,
) -> None:
    """Start everything that is not running yet, then write the endpoints file.

    Starts NATS, PostgreSQL (creating each service's database with pgvector) and the S3 store, runs each
    service's migrations and starts it, and waits until each answers its health check. Safe to run
    again: healthy components are left alone, stopped ones are started on the same ports with the same
    data. Writes `.modelhub/endpoints.env` (URLs and an admin token, mode 600) for `source`.
    """
    stack = Stack(progress=_progress, log_level=log_level.value, monitoring=monitoring, cluster=cluster)
    try:
        statuses = stack.up()
    except DevstackError as exc:
        raise _fail(exc.message) from None
    console.print(_status_table("modelhub dev stack", statuses))
    failed = _print_problems(statuses)
    endpoints = _relative(stack.paths.endpoints_file)
    console.print(f"\nEndpoints and an admin token (MODELHUB_TOKEN): [bold]. {escape(endpoints)}[/bold]")
    if failed:
        raise _fail("some services did not start; see above and `modelhub-dev logs NAME`")


@app.command()
def down() -> None:
    """Stop everything `up` started (services first, then infrastructure). Data and ports are kept."""
    stack = Stack(progress=_progress)
    try:
        statuses = stack.down()
    except DevstackError as exc:
        raise _fail(exc.message) from None
    if not statuses:
        console.print(f"Nothing to stop: no stack in {escape(str(stack.paths.home))}.")
        return
    console.print(_status_table("modelhub dev stack", statuses))


@app.command()
def clean(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop the stack and delete its state directory: all data, logs, ports and secrets."""
    stack = Stack(progress=_progress)
    home = stack.paths.home
    if not home.exists():
        console.print(f"Nothing to clean: {escape(str(home))} does not exist.")
        return
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Delete {home} and every database, object and log in it?", abort=True)
    try:
        stack.clean()
    except DevstackError as exc:
        raise _fail(exc.message) from None
    console.print(f"Removed {escape(str(home))}.")


@app.command()
def status() -> None:
    """Show each component's endpoint and whether it answers its health check."""
    stack = Stack()
    try:
        statuses = stack.status()
    except DevstackError as exc:
        raise _fail(exc.message) from None
    if not statuses:
        console.print(f"No stack in {escape(str(stack.paths.home))}: run `modelhub-dev up`.")
        return
    console.print(_status_table("modelhub dev stack", statuses))


@app.command()
def logs(
    name: Annotated[
        str | None, typer.Argument(help="Component whose log to print (see the table without NAME).")
    ] = None,
    follow: Annotated[
        str | None,
        typer.Option("--follow", "-f", metavar="NAME", help="Print NAME's log and keep following it."),
    ] = None,
    tail: Annotated[int, typer.Option("--tail", "-n", min=0, help="How many last lines to print.")] = 20,
) -> None:
    """Show where each component logs, or print (`NAME`) or follow (`--follow NAME`) one log."""
    stack = Stack()
    try:
        files = stack.log_files()
    except DevstackError as exc:
        raise _fail(exc.message) from None
    target = follow or name
    if target is None:
        table = Table(title="modelhub dev stack logs", title_justify="left")
        table.add_column("Component", style="bold", no_wrap=True)
        table.add_column("Log file", overflow="fold")
        table.add_column("Size", justify="right", no_wrap=True)
        for component, path in files.items():
            size = f"{path.stat().st_size:,} B" if path.exists() else "[dim]not yet[/dim]"
            table.add_row(escape(component), escape(_relative(path)), size)
        console.print(table)
        return
    if target not in files:
        raise _fail(f"no component named {target!r}; known: {', '.join(files)}")
    path = files[target]
    if not path.exists():
        raise _fail(f"{target} has not logged anything yet ({path} does not exist); run `modelhub-dev up`")
    if tail:
        sys.stdout.write(log_tail(path, tail, max_bytes=max(16384, tail * 512)) + "\n")
        sys.stdout.flush()
    if follow is not None:
        _follow(path)


def _follow(path: Path) -> None:
    """Print lines appended to ``path`` until Ctrl-C, coping with the file being truncated."""
    position = path.stat().st_size
    try:
        while True:
            size = path.stat().st_size if path.exists() else 0
            if size < position:
                position = 0
            if size > position:
                with path.open("rb") as log:
                    log.seek(position)
                    chunk = log.read()
                position += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            time.sleep(0.25)
    except KeyboardInterrupt:
        return


@app.command()
def env() -> None:
    """Print the path of the endpoints file, for `. "$(modelhub-dev env)"` in a shell."""
    path = Stack().paths.endpoints_file
    if not path.exists():
        raise _fail(f"{path} does not exist yet: run `modelhub-dev up` first")
    sys.stdout.write(f"{path}\n")


def main() -> None:
    """Entry point for `python -m modelhub_devstack`."""
    app(prog_name=os.path.basename(sys.argv[0]) or "modelhub-dev")
