"""``modelhub audit list``: who did what, newest first (admins only)."""

from __future__ import annotations

from typing import Annotated

import typer

from modelhub_cli import render
from modelhub_cli.session import AsJson, open_client, registry_app

app = registry_app("The audit log: every change, every denied attempt and every read of secrets or exports.")


@app.command("list")
def list_audit(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option("--actor", help="only what this user (token subject) did")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. 'DELETE /api/v1/models/{model_id:path}'")] = None,
    target: Annotated[str | None, typer.Option("--target", help="the id acted on, e.g. a model id")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time, e.g. 2026-12-01T00:00:00Z")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time (exclusive)")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="rows per page")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="the next page, as the last one said")] = None,
    as_json: AsJson = False,
) -> None:
    """Show the audit log, newest first, as a table.

    Examples: modelhub audit list --actor alice;  modelhub audit list --target my-model --since 2026-12-01T00:00:00Z
    """
    with open_client(ctx) as client:
        page = client.audit(
            actor=actor, action=action, target=target, since=since, until=until, limit=limit, cursor=cursor
        )
    if as_json:
        render.print_json(page)
        return
    items = [i for i in page.get("items", []) if isinstance(i, dict)]
    columns = ["time", "actor", "role", "action", "target", "outcome", "status", "from"]
    rows = (
        [
            i.get("at"),
            i.get("actor"),
            i.get("actor_role"),
            i.get("action"),
            i.get("target"),
            i.get("outcome"),
            i.get("status"),
            i.get("source_address"),
        ]
        for i in items
    )
    render.show(render.table(columns, rows, title="audit log"))
    if page.get("next_cursor"):
        render.note(f"more: modelhub audit list --cursor '{page['next_cursor']}' (with the same filters)")
