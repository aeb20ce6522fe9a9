"""``modelhub models ...``: create, inspect and change model files in the registry."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modelhub_cli import lineage_cmd, render, transfer_cmd
from modelhub_cli.client import FlagAction, JsonObject
from modelhub_cli.errors import ApiError, CliError
from modelhub_cli.model_spec import ModelFlags, create_body, edit_patch
from modelhub_cli.session import AsJson, ModelId, open_client, registry_app

app = registry_app(
    "Model files: a base model plus a system prompt, parameters and metadata (Open WebUI's Models workspace)."
)

SpecFile = Annotated[
    Path | None, typer.Option("--file", "-f", help="a JSON or YAML file with the fields; flags given too win")
]
Base = Annotated[str | None, typer.Option("--base", help="base model (or model file) it builds on")]
Name = Annotated[str | None, typer.Option("--name", help="display name")]
System = Annotated[str | None, typer.Option("--system", help="system prompt; {{ USER_NAME }} etc. are kept")]
Temperature = Annotated[float | None, typer.Option("--temperature", help="0 to 2")]
TopP = Annotated[float | None, typer.Option("--top-p", help="0 to 1")]
MaxTokens = Annotated[int | None, typer.Option("--max-tokens", help="longest answer, in tokens")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="a tag; repeat for several")]
Description = Annotated[str | None, typer.Option("--description", help="what the model is for")]
Vision = Annotated[bool | None, typer.Option("--vision/--no-vision", help="whether it accepts images")]


def _state(model: JsonObject) -> tuple[str, str]:
    return render.cell(bool(model.get("hidden"))), render.cell(bool(model.get("enabled", True)))


def models_table(items: list[JsonObject]) -> Table:
    columns = ["id", "name", "base", "tags", "hidden", "enabled", "version", "owner"]
    rows = (
        [
            m.get("id"),
            m.get("name"),
            m.get("base_model_id"),
            (m.get("meta") or {}).get("tags"),
            *_state(m),
            m.get("version"),
            m.get("owner_id"),
        ]
        for m in items
    )
    return render.table(columns, rows)


@app.command("list")
def list_models(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Option("--q", "--search", help="search id, name and description")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="only models with this tag")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="only models this user owns")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="include hidden models")] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="include disabled models")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="models per page")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="follow every page, not just the first")] = False,
    as_json: AsJson = False,
) -> None:
    """List the model files you can read, as a table.

    Example: modelhub models list --tag support --hidden --all
    """
    query: dict[str, Any] = {"q": q, "tag": tag, "owner": owner, "limit": limit}
    with open_client(ctx) as client:
        page = client.list_models(include_hidden=hidden, include_disabled=disabled, **query)
        items: list[JsonObject] = list(page.get("items", []))
        cursor = page.get("next_cursor")
        while all_pages and cursor:
            page = client.list_models(include_hidden=hidden, include_disabled=disabled, cursor=cursor, **query)
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
    if as_json:
        render.print_json({"items": items, "next_cursor": cursor})
        return
    render.show(models_table(items))
    if cursor:
        render.note("there are more models: add --all to list them all")


@app.command()
def show(ctx: typer.Context, model_id: ModelId, as_json: AsJson = False) -> None:
    """Show one model file: its fields, parameters and system prompt.

    Example: modelhub models show support-bot
    """
    with open_client(ctx) as client:
        model = client.get_model(model_id)
    if as_json:
        render.print_json(model)
        return
    meta: JsonObject = model.get("meta") or {}
    access: JsonObject = model.get("access") or {}
    hidden, enabled = _state(model)
    render.show(
        render.key_values(
            [
                ("id", model.get("id")),
                ("name", model.get("name")),
                ("base", model.get("base_model_id")),
                ("owner", model.get("owner_id")),
                ("version", model.get("version")),
                ("hidden", hidden),
                ("enabled", enabled),
                ("description", meta.get("description")),
                ("tags", meta.get("tags")),
                ("capabilities", [f"{k}: {render.cell(v)}" for k, v in (meta.get("capabilities") or {}).items()]),
                ("knowledge", [k.get("id") for k in meta.get("knowledge") or [] if isinstance(k, dict)]),
                ("public read", bool(access.get("public_read"))),
                ("grants", access.get("grants")),
                ("avatar", meta.get("profile_image_url")),
                ("created", model.get("created_at")),
                ("updated", model.get("updated_at")),
            ]
        )
    )
    params: JsonObject = model.get("params") or {}
    if params:
        render.show(render.table(["param", "value"], sorted(params.items()), title="params"))


@app.command()
def create(
    ctx: typer.Context,
    id_: Annotated[str | None, typer.Option("--id", help="the new model's id")] = None,
    base: Base = None,
    name: Name = None,
    system: System = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    max_tokens: MaxTokens = None,
    tag: Tags = None,
    description: Description = None,
    vision: Vision = None,
    file: SpecFile = None,
) -> None:
    """Create a model file from flags, or from a JSON/YAML file.

    Example: modelhub models create --id support-bot --base llama3.1:8b --system "You answer tickets." --tag support

    Example: modelhub models create --file support-bot.yaml
    """
    flags = ModelFlags(
        id=id_,
        base=base,
        name=name,
        system=system,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        tags=tuple(tag or ()),
        description=description,
        vision=vision,
    )
    body = create_body(flags, file)
    with open_client(ctx) as client:
        model = client.create_model(body)
    render.success(f"created model '{model.get('id')}' (version {model.get('version')})")


@app.command()
def edit(
    ctx: typer.Context,
    model_id: ModelId,
    base: Base = None,
    name: Name = None,
    system: System = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    max_tokens: MaxTokens = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="replaces the tags; repeat for several")] = None,
    description: Description = None,
    vision: Vision = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="a JSON/YAML merge patch (null removes a key); flags given too win"),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="the version you edited; refused if someone changed it since")
    ] = None,
) -> None:
    """Change a model file: only the given fields change (a JSON merge patch).

    Example: modelhub models edit support-bot --temperature 0.2 --version 3
    """
    flags = ModelFlags(
        base=base,
        name=name,
        system=system,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        tags=tuple(tag or ()),
        description=description,
        vision=vision,
    )
    patch = edit_patch(flags, file)
    with open_client(ctx) as client:
        try:
            model = client.update_model(model_id, patch, version=version)
        except ApiError as exc:
            if exc.status == 409 and version is not None:
                exc.hint = f"run `modelhub models show {model_id}` to see what changed, then edit with its --version"
            raise
    render.success(f"updated model '{model_id}'; it is now at version {model.get('version')}")


@app.command()
def rm(
    ctx: typer.Context,
    model_id: ModelId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a model file (its history goes with it).

    Example: modelhub models rm support-bot --yes
    """
    if not yes:
        typer.confirm(f"Delete model '{model_id}'? This cannot be undone", abort=True)
    with open_client(ctx) as client:
        client.delete_model(model_id)
    render.success(f"deleted model '{model_id}'")


@app.command()
def clone(ctx: typer.Context, model_id: ModelId) -> None:
    """Copy a model file to ID-clone, owned by you.

    Example: modelhub models clone support-bot
    """
    with open_client(ctx) as client:
        model = client.clone_model(model_id)
    render.success(f"cloned '{model_id}' as '{model.get('id')}' ({model.get('name')})")


def _flag_command(action: FlagAction, summary: str, done: str) -> None:
    def command(ctx: typer.Context, model_id: ModelId) -> None:
        with open_client(ctx) as client:
            client.set_flag(model_id, action)
        render.success(f"{done} model '{model_id}'")

    command.__doc__ = f"{summary}\n\nExample: modelhub models {action} support-bot"
    app.command(action)(command)


_flag_command("hide", "Hide a model from the model selector (still usable by its id).", "hid")
_flag_command("unhide", "Show a hidden model in the model selector again.", "unhid")
_flag_command("enable", "Allow a disabled model to be used again.", "enabled")
_flag_command("disable", "Stop a model from being used (it stays in the registry).", "disabled")


@app.command()
def avatar(
    ctx: typer.Context,
    model_id: ModelId,
    image: Annotated[
        Path, typer.Argument(metavar="IMAGE", help="a PNG, JPEG, WebP or GIF file", exists=True, dir_okay=False)
    ],
) -> None:
    """Set a model's avatar from an image file (the registry resizes it to at most 256x256).

    Example: modelhub models avatar support-bot logo.png
    """
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {image}: {exc.strerror or exc}") from exc
    content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    with open_client(ctx) as client:
        client.set_avatar(model_id, image.name, data, content_type)
    render.success(f"set the avatar of '{model_id}'")


# Registered last so that `models --help` lists the everyday commands first.
transfer_cmd.register(app)
lineage_cmd.register(app)
