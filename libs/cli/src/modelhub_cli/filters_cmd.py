"""``modelhub filters ...``: inlet/outlet filters the chat gateway runs; model files select them in
``meta.filterIds`` and ``meta.defaultFilterIds`` (admins only)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated, Any

import typer

from modelhub_cli import render
from modelhub_cli.errors import CliError
from modelhub_cli.session import AsJson, open_client, registry_app

app = registry_app(
    "Filters the chat gateway runs on a user's message (inlet) and on the answer (outlet); model files select"
    " them in meta.filterIds and meta.defaultFilterIds (admin only)."
)

FilterId = Annotated[str, typer.Argument(metavar="ID", help="the filter's id, as `modelhub filters list` shows it")]


class Kind(StrEnum):
    redact = "redact"
    block = "block"
    prepend = "prepend"
    append = "append"
    max_length = "max_length"
    webhook = "webhook"


class Direction(StrEnum):
    inlet = "inlet"
    outlet = "outlet"
    both = "both"


# Which options each kind takes (the rest are refused, so a typo'd combination does not pass silently).
_KIND_OPTIONS: dict[Kind, tuple[str, ...]] = {
    Kind.redact: ("--pattern", "--replacement"),
    Kind.block: ("--pattern", "--message"),
    Kind.prepend: ("--text",),
    Kind.append: ("--text",),
    Kind.max_length: ("--max-chars",),
    Kind.webhook: ("--url", "--timeout", "--secret-env"),
}
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    Kind.redact: ("--pattern",),
    Kind.block: ("--pattern", "--message"),
    Kind.prepend: ("--text",),
    Kind.append: ("--text",),
    Kind.max_length: ("--max-chars",),
    Kind.webhook: ("--url",),
}


def _config(kind: Kind, given: dict[str, Any]) -> dict[str, Any]:
    present = {option for option, value in given.items() if value not in (None, [])}
    stray = sorted(present - set(_KIND_OPTIONS[kind]))
    if stray:
        raise CliError(
            f"{', '.join(stray)} does not apply to a {kind.value} filter",
            hint=f"a {kind.value} filter takes {', '.join(_KIND_OPTIONS[kind])}",
        )
    missing = [option for option in _REQUIRED[kind] if option not in present]
    if missing:
        raise CliError(
            f"a {kind.value} filter needs {', '.join(missing)}",
            hint="see `modelhub filters add --help` for an example of each kind",
        )
    config: dict[str, Any] = {}
    if "--pattern" in present:
        config["patterns"] = given["--pattern"]
    for option, key in (
        ("--replacement", "replacement"),
        ("--message", "message"),
        ("--text", "text"),
        ("--max-chars", "max_chars"),
        ("--url", "url"),
        ("--timeout", "timeout_seconds"),
    ):
        if option in present:
            config[key] = given[option]
    if "--secret-env" in present:
        variable = given["--secret-env"]
        secret = os.environ.get(variable)
        if not secret:
            raise CliError(
                f"the environment variable {variable} named by --secret-env is not set or empty",
                hint=f"export {variable}=<the webhook's secret> and run the command again",
            )
        config["secret"] = secret
    return config


@app.command("add")
def add_filter(
    ctx: typer.Context,
    filter_id: Annotated[str, typer.Argument(metavar="ID", help="a slug model files use: a-z, 0-9, '.', '_', '-'")],
    kind: Annotated[Kind, typer.Option("--kind", help="what the filter does")],
    direction: Annotated[
        Direction, typer.Option("--direction", help="inlet: the user's message; outlet: the answer; or both")
    ] = Direction.both,
    name: Annotated[str | None, typer.Option("--name", help="a readable name (default: the id)")] = None,
    description: Annotated[str, typer.Option("--description", help="what the filter is for")] = "",
    pattern: Annotated[
        list[str] | None,
        typer.Option(
            "--pattern",
            help="redact/block: a regular expression, or a built-in: email, api_key, credit_card (repeatable)",
        ),
    ] = None,
    replacement: Annotated[
        str | None, typer.Option("--replacement", help="redact: what a match becomes (default \\[redacted])")
    ] = None,
    message: Annotated[str | None, typer.Option("--message", help="block: what the user is told")] = None,
    text: Annotated[str | None, typer.Option("--text", help="prepend/append: the text to add")] = None,
    max_chars: Annotated[int | None, typer.Option("--max-chars", help="max_length: characters kept")] = None,
    url: Annotated[str | None, typer.Option("--url", help="webhook: the https:// endpoint")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="webhook: seconds it may take (default 5)")] = None,
    secret_env: Annotated[
        str | None,
        typer.Option(
            "--secret-env",
            metavar="VARIABLE",
            help="webhook: the environment variable holding its bearer secret (never shown again)",
        ),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="add it switched off")] = False,
    as_json: AsJson = False,
) -> None:
    """Add a filter. Model files then select it by id in meta.filterIds or meta.defaultFilterIds.

    Examples:

      modelhub filters add redact-emails --kind redact --pattern email --direction both

      modelhub filters add no-secrets --kind block --pattern 'sk-[A-Za-z0-9]{20,}' --message "Remove the API key."

      modelhub filters add audit-hook --kind webhook --url https://audit.example.com/filter --secret-env HOOK_SECRET
    """
    given = {
        "--pattern": pattern,
        "--replacement": replacement,
        "--message": message,
        "--text": text,
        "--max-chars": max_chars,
        "--url": url,
        "--timeout": timeout,
        "--secret-env": secret_env,
    }
    body: dict[str, Any] = {
        "id": filter_id,
        "kind": kind.value,
        "direction": direction.value,
        "config": _config(kind, given),
        "enabled": not disabled,
    }
    if name:
        body["name"] = name
    if description:
        body["description"] = description
    with open_client(ctx) as client:
        created = client.add_filter(body)
    if as_json:
        render.print_json(created)
        return
    state = "" if created.get("enabled", True) else " (disabled)"
    render.success(f"added {kind.value} filter '{created.get('id')}' on {_stage(created.get('direction'))}{state}")
    render.note(f'select it in a model file: meta.filterIds: ["{created.get("id")}"]')


def _stage(direction: Any) -> str:
    return {"inlet": "the user's message", "outlet": "the answer", "both": "the user's message and the answer"}.get(
        str(direction), str(direction)
    )


def _summary(item: dict[str, Any]) -> str:
    """One line saying what the filter does (no secret: the registry never sends it here)."""
    config = item.get("config") or {}
    kind = item.get("kind")
    if kind in ("redact", "block"):
        patterns = ", ".join(str(p) for p in config.get("patterns", []))
        extra = f" → {config.get('replacement')}" if kind == "redact" else f": {config.get('message')}"
        return f"{patterns}{extra}"
    if kind in ("prepend", "append"):
        return str(config.get("text", ""))
    if kind == "max_length":
        return f"{config.get('max_chars')} characters"
    if kind == "webhook":
        secret = "secret set" if item.get("has_secret") else "no secret"
        return f"{config.get('url')} ({config.get('timeout_seconds')} s, {secret})"
    return render.cell(config)


@app.command("list")
def list_filters(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the filters: kind, direction, whether enabled, and whether a webhook has a secret.

    Example: modelhub filters list
    """
    with open_client(ctx) as client:
        items = client.filters()
    if as_json:
        render.print_json({"items": items})
        return
    columns = ["id", "name", "kind", "direction", "enabled", "secret", "version"]
    rows = (
        [
            f.get("id"),
            f.get("name"),
            f.get("kind"),
            f.get("direction"),
            f.get("enabled"),
            "set" if f.get("has_secret") else "-",
            f.get("version"),
        ]
        for f in items
    )
    render.show(render.table(columns, rows, title="filters"))
    if not items:
        render.note("no filters yet: add one with `modelhub filters add ID --kind ...`")


@app.command("show")
def show_filter(ctx: typer.Context, filter_id: FilterId, as_json: AsJson = False) -> None:
    """Show one filter and its settings (a webhook's secret is shown only as set or not).

    Example: modelhub filters show redact-emails
    """
    with open_client(ctx) as client:
        item = client.filter(filter_id)
    if as_json:
        render.print_json(item)
        return
    pairs = [
        ("id", item.get("id")),
        ("name", item.get("name")),
        ("description", item.get("description")),
        ("kind", item.get("kind")),
        ("runs on", _stage(item.get("direction"))),
        ("enabled", item.get("enabled")),
        ("does", _summary(item)),
        ("version", item.get("version")),
        ("updated", item.get("updated_at")),
    ]
    render.show(render.key_values(pairs))


@app.command("rm")
def remove_filter(ctx: typer.Context, filter_id: FilterId) -> None:
    """Remove a filter. Model files naming it keep the id; their chats no longer run it.

    Example: modelhub filters rm redact-emails
    """
    with open_client(ctx) as client:
        client.delete_filter(filter_id)
    render.success(f"removed filter '{filter_id}'")
