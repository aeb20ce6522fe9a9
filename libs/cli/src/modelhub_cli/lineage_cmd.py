"""``modelhub models history|restore|effective``: where a model file came from and what it resolves to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from modelhub_cli import render
from modelhub_cli.client import JsonObject
from modelhub_cli.session import AsJson, ModelId, open_client


def history(ctx: typer.Context, model_id: ModelId, as_json: AsJson = False) -> None:
    """List every version of a model file: who changed what, and when.

    Example: modelhub models history support-bot
    """
    with open_client(ctx) as client:
        revisions = client.revisions(model_id)
    if as_json:
        render.print_json({"items": revisions})
        return
    columns = ["version", "action", "by", "changed", "when"]
    rows = (
        [r.get("version"), r.get("action"), r.get("actor"), r.get("changed_fields"), r.get("created_at")]
        for r in revisions
    )
    render.show(render.table(columns, rows, title=f"history of {model_id}"))


def restore(
    ctx: typer.Context,
    model_id: ModelId,
    version: Annotated[int, typer.Argument(metavar="VERSION", help="the version to bring back")],
) -> None:
    """Make an earlier version current again (saved as a new version, so nothing is lost).

    Example: modelhub models restore support-bot 2
    """
    with open_client(ctx) as client:
        model = client.restore(model_id, version)
    render.success(f"restored '{model_id}' to version {version}; it is now at version {model.get('version')}")


def effective(ctx: typer.Context, model_id: ModelId, as_json: AsJson = False) -> None:
    """Show what a model resolves to: the chain down to its base model, and each parameter with its source.

    Example: modelhub models effective support-bot
    """
    with open_client(ctx) as client:
        result = client.effective(model_id)
    if as_json:
        render.print_json(result)
        return
    chain: list[JsonObject] = [link for link in result.get("chain") or [] if isinstance(link, dict)]
    chain_rows = (
        [step, link.get("kind"), link.get("id"), link.get("enabled"), link.get("available")]
        for step, link in enumerate(chain)
    )
    render.show(render.table(["#", "kind", "id", "enabled", "available"], chain_rows, title=f"chain of {model_id}"))
    params: JsonObject = result.get("params") or {}
    param_rows = ([key, p.get("value"), p.get("source")] for key, p in sorted(params.items()) if isinstance(p, dict))
    render.show(render.table(["param", "value", "source"], param_rows, title="effective params"))
    if result.get("precedence"):
        render.show(Text(f"precedence: {result['precedence']}"))
    if result.get("usable", True):
        render.success("usable: yes")
    else:
        problems = "; ".join(str(p) for p in result.get("problems") or []) or "see the chain above"
        render.note(f"usable: no ({problems})")


def register(app: typer.Typer) -> None:
    app.command()(history)
    app.command()(restore)
    app.command()(effective)
