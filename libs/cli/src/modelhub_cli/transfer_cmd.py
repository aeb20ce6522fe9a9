"""``modelhub models export|import|share``: model files in and out, in Open WebUI's file format."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from modelhub_cli import render
from modelhub_cli.client import Download, JsonObject
from modelhub_cli.errors import CliError
from modelhub_cli.model_spec import YAML_SUFFIXES, read_document
from modelhub_cli.session import AsJson, ModelId, open_client

STDOUT = Path("-")
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="file to write; '-' for stdout (default: the name the registry suggests)"),
]


def local_name(suggested: str | None, fallback: str) -> Path:
    """The registry's suggested file name, reduced to a plain name in the current directory.

    The name comes from a server; a ``../`` or absolute path in it must not pick where we write.
    """
    name = Path(suggested or "").name
    return Path(name if name and not name.startswith(".") else fallback)


def write_chunks(target: Path, chunks: Iterable[bytes]) -> None:
    """Writes through a ``.part`` file and renames it, so a failed export never leaves half a file behind."""
    if target == STDOUT:
        stream = typer.get_binary_stream("stdout")
        for chunk in chunks:
            stream.write(chunk)
        stream.flush()
        return
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from exc


def write_file(target: Path, data: bytes) -> None:
    write_chunks(target, [data])


def _save(download: Download, output: Path | None, fallback: str) -> Path:
    target = output or local_name(download.filename, fallback)
    write_chunks(target, download.chunks)
    return target


def export(
    ctx: typer.Context,
    model_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="the model to export (or --all)", show_default=False)
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="export every model you can read, as one file")] = False,
    output: Output = None,
) -> None:
    """Export model files as an Open WebUI JSON file (the avatar embedded), ready to import elsewhere.

    Example: modelhub models export support-bot -o support-bot.json

    Example: modelhub models export --all -o backup.json
    """
    if (model_id is None) == (not all_models):
        raise CliError("give a model id or --all (not both)", hint="e.g. `modelhub models export support-bot`")
    with open_client(ctx) as client:
        if model_id is not None:
            target = _save(client.export_model(model_id), output, "model-export.json")
        else:
            with client.export_all() as download:
                target = _save(download, output, "models-export.json")
    if target != STDOUT:
        render.success(f"exported to {target}")


def _document_bytes(file: Path) -> bytes:
    """The file as the registry wants it: JSON. YAML is converted here, so both kinds of file work."""
    if file.suffix.lower() in YAML_SUFFIXES:
        return json.dumps(read_document(file)).encode()
    try:
        return file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from exc


def _print_report(report: JsonObject) -> None:
    outcomes = ("created", "updated", "unchanged")
    rows = [(outcome, model_id) for outcome in outcomes for model_id in report.get(outcome) or []]
    render.show(render.table(["result", "id"], rows, title="import"))
    warnings: list[Any] = [w for w in report.get("warnings") or [] if isinstance(w, dict)]
    if warnings:
        warning_rows = ([w.get("index"), w.get("id"), w.get("message")] for w in warnings)
        render.show(render.table(["index", "id", "warning"], warning_rows, title="warnings"))
    counts = ", ".join(f"{len(report.get(outcome) or [])} {outcome}" for outcome in outcomes)
    suffix = " (dry run: nothing was written)" if report.get("dry_run") else ""
    render.success(f"{counts}{suffix}")


def import_models(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="an Open WebUI export (JSON), or the same as YAML", exists=True, dir_okay=False
        ),
    ],
    upsert: Annotated[bool, typer.Option("--upsert", help="update models that exist instead of refusing")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and report, but write nothing")] = False,
    as_json: AsJson = False,
) -> None:
    """Import model files, all or nothing: if any item is bad, nothing is written and each bad item is listed.

    Example: modelhub models import backup.json --upsert --dry-run
    """
    document = _document_bytes(file)
    with open_client(ctx) as client:
        report = client.import_models(document, upsert=upsert, dry_run=dry_run)
    if as_json:
        render.print_json(report)
    else:
        _print_report(report)


def share(ctx: typer.Context, model_id: ModelId, output: Output = None, as_json: AsJson = False) -> None:
    """Show how to share a model on Open WebUI's community site: the page to open and the model to upload.

    Example: modelhub models share support-bot -o support-bot.json
    """
    with open_client(ctx) as client:
        payload = client.share(model_id)
    if as_json:
        render.print_json(payload)
        return
    model = json.dumps(payload.get("model"), indent=2, ensure_ascii=False)
    if output is None or output == STDOUT:
        render.note(f"open {payload.get('url')} and paste this model:")
        typer.echo(model)
        return
    write_file(output, model.encode())
    render.success(f"open {payload.get('url')} and upload {output}")


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("import")(import_models)
    app.command()(share)
