"""How results and errors look: rich tables for people, plain JSON for scripts.

Values from the registry are wrapped in ``Text`` before printing: a model named ``[bold]x`` must show as
written, not be read as rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelhub_cli.errors import ApiError, CliError


# Consoles are built per call (they are cheap) so that they write to whatever stdout/stderr and terminal
# width are current, which is what a test runner that swaps the streams needs.
def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def cell(value: Any) -> str:
    """One value as table text: lists joined, booleans as yes/no, nothing as ``-``."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> Table:
    result = Table(title=title)
    for column in columns:
        # fold, not ellipsis: ids are what people copy out of a table, so they must appear whole.
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*(Text(cell(value)) for value in row))
    return result


def show(renderable: Table | Text | str) -> None:
    stdout().print(renderable)


def success(message: str, *, err: bool = False) -> None:
    """A green confirmation; ``err`` sends it to stderr, for commands whose stdout is a value for scripts."""
    (stderr() if err else stdout()).print(Text(message, style="green"))


def note(message: str) -> None:
    stderr().print(Text(message, style="yellow"))


def print_json(data: Any) -> None:
    """Plain, indented JSON without colours or wrapping, so that ``jq`` and friends can read it."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def key_values(pairs: Iterable[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(Text(key), Text(cell(value)))
    return grid


def _item_errors(details: Any) -> list[dict[str, Any]]:
    errors = details.get("errors") if isinstance(details, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def print_error(exc: CliError) -> None:
    console = stderr()
    console.print(Text(f"error: {exc}", style="bold red"))
    if isinstance(exc, ApiError):
        # An import is refused as a whole; the user needs every bad item, not just the summary line.
        bad = _item_errors(exc.details)
        if bad:
            rows = ([e.get("index"), e.get("id"), e.get("reason")] for e in bad)
            console.print(table(["index", "id", "reason"], rows, title="rejected items"))
    if exc.hint:
        console.print(Text(f"hint: {exc.hint}", style="yellow"))
