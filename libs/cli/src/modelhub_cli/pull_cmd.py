"""``modelhub pull NAME`` and ``modelhub pulls``: server-side pulls through the puller service.

A pull runs on the puller, not in this process: ``pull`` starts it (or joins the running pull of the same
model) and follows its event stream with a progress bar overall and per layer. Ctrl-C asks whether to
cancel the pull on the server or to detach and leave it running; ``modelhub pull NAME`` again re-attaches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from modelhub_cli import render
from modelhub_cli.client import JsonObject, error_from_response, service_http
from modelhub_cli.endpoints import EndpointsError, load_endpoints
from modelhub_cli.errors import ApiError, CliError
from modelhub_cli.session import TOKEN_KEY, ReportingGroup

URL_KEY = "MODELHUB_PULLER_URL"
FINAL_STATES = ("completed", "failed", "cancelled")

app = typer.Typer(cls=ReportingGroup, add_completion=False)
pulls_app = typer.Typer(
    help="Pull jobs on the puller: list them (the default), show one, cancel one.",
    cls=ReportingGroup,
    add_completion=False,
    invoke_without_command=True,
)
app.add_typer(pulls_app, name="pulls")

PullerUrl = Annotated[
    str | None, typer.Option("--puller-url", help=f"the puller's base URL (default: ${URL_KEY}, then endpoints.env)")
]
Token = Annotated[
    str | None,
    typer.Option("--token", help=f"bearer token (default: ${TOKEN_KEY}, then endpoints.env)", show_default=False),
]
EnvFile = Annotated[
    Path | None, typer.Option("--env-file", help="endpoints file to read instead of .modelhub/endpoints.env")
]
AsJson = Annotated[bool, typer.Option("--json", help="print the puller's raw JSON (for scripts)")]


class PullerClient:
    """The puller's REST API; every failure becomes an :class:`ApiError` with the server's message."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = service_http(
            base_url, token, timeout=timeout, service="puller", hint=f"set {URL_KEY} or --puller-url to a puller's URL"
        )

    def __enter__(self) -> PullerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _unreachable(self, exc: httpx.HTTPError) -> ApiError:
        return ApiError(
            f"the puller at {self.base_url} is unreachable ({type(exc).__name__}: {exc})",
            status=0,
            hint=f"start the stack with `make up`, or point {URL_KEY} / --puller-url at a running puller",
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise error_from_response(response)
        body = response.json()
        if not isinstance(body, dict):
            raise ApiError(f"the puller answered {method} {path} with an unexpected shape", status=response.status_code)
        return body

    def start(self, model: str, target: str) -> JsonObject:
        return self._json("POST", "/api/v1/pulls", json={"model": model, "target": target})

    def get(self, pull_id: str) -> JsonObject:
        return self._json("GET", f"/api/v1/pulls/{pull_id}")

    def list(self, *, active: bool, limit: int | None) -> list[JsonObject]:
        params: dict[str, Any] = {"active": active}
        if limit:
            params["limit"] = limit
        items = self._json("GET", "/api/v1/pulls", params=params).get("items", [])
        return [item for item in items if isinstance(item, dict)]

    def cancel(self, pull_id: str) -> JsonObject:
        return self._json("DELETE", f"/api/v1/pulls/{pull_id}")

    def events(self, pull_id: str) -> Iterator[JsonObject]:
        """The pull's NDJSON event stream until it ends (no read timeout: a quiet pull is not a dead one)."""
        try:
            with self._http.stream(
                "GET", f"/api/v1/pulls/{pull_id}/events", timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    if line.strip():
                        item = json.loads(line)
                        if isinstance(item, dict):
                            yield item
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def resolve(puller_url: str | None, token: str | None, env_file: Path | None) -> Target:
    try:
        endpoints = load_endpoints(env_file)
    except EndpointsError as exc:
        raise CliError(str(exc)) from exc
    url = puller_url or endpoints.get(URL_KEY)
    if not url:
        raise CliError(
            "no puller URL is configured",
            hint=f"run `make up` (it writes .modelhub/endpoints.env), set {URL_KEY}, or pass --puller-url",
        )
    bearer = token or endpoints.get(TOKEN_KEY)
    if not bearer:
        raise CliError("no token is configured", hint=f"set {TOKEN_KEY} or pass --token")
    return Target(url, bearer)


# ---- progress


class PullDisplay:
    """A rich progress view: one bar for the whole pull, one per layer."""

    def __init__(self, progress: Progress, pull: JsonObject) -> None:
        self._progress = progress
        self._overall = progress.add_task(_short(pull.get("base_model_id") or pull.get("model")), total=None)
        self._layers: dict[str, TaskID] = {}
        self.update(pull)

    def update(self, event: JsonObject) -> None:
        total = int(event.get("total_bytes") or 0)
        done = int(event.get("completed_bytes") or 0)
        status = str(event.get("status") or "")
        self._progress.update(self._overall, total=total or None, completed=done)
        if status:
            base = self._progress.tasks[self._overall].description.split(" · ")[0]
            self._progress.update(self._overall, description=f"{base} · {status}")
        for layer in event.get("layers") or []:
            digest = str(layer.get("digest") or "")
            if not digest:
                continue
            task = self._layers.get(digest)
            if task is None:
                kind = str(layer.get("media_type") or "layer").rsplit(".", 1)[-1]
                task = self._progress.add_task(f"  {kind} {digest.removeprefix('sha256:')[:12]}", total=None)
                self._layers[digest] = task
            self._progress.update(
                task, total=int(layer.get("total_bytes") or 0) or None, completed=int(layer.get("completed_bytes") or 0)
            )


def _short(value: object) -> str:
    return str(value or "pull")


def follow(client: PullerClient, pull: JsonObject) -> JsonObject:
    """Shows the pull's progress until it ends; returns its final state."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=render.stdout(), transient=False) as progress:
        display = PullDisplay(progress, pull)
        final = pull
        for event in client.events(str(pull["id"])):
            kind = event.get("type")
            if kind in ("snapshot", *FINAL_STATES):
                final = event.get("pull") or final
                display.update(final)
            elif kind == "progress":
                display.update(event)
        return final


def ask_on_interrupt() -> str:
    """Asks what Ctrl-C means: cancel the server's pull, or detach and let it run."""
    answer = typer.prompt("\nCancel the pull on the server, or detach and let it run? [c]ancel/[d]etach", default="d")
    return "cancel" if answer.strip().lower().startswith("c") else "detach"


def report(pull: JsonObject) -> None:
    state = pull.get("state")
    name = pull.get("base_model_id") or pull.get("model")
    if state == "completed":
        render.success(f"pulled {name} ({pull.get('total_bytes', 0)} bytes)")
        return
    if state == "cancelled":
        raise CliError(f"the pull of {name} was cancelled")
    error = pull.get("error") or {}
    raise CliError(f"the pull of {name} failed: {error.get('message') or state} [{error.get('code') or 'unknown'}]")


@app.command()
def pull(
    model: Annotated[str, typer.Argument(metavar="NAME", help="e.g. llama3.2:1b or hf.co/user/repo:Q4_K_M")],
    target: Annotated[str, typer.Option("--target", help="store (the model store) or ollama")] = "store",
    detach: Annotated[bool, typer.Option("--detach", help="start the pull and return at once")] = False,
    on_interrupt: Annotated[
        str, typer.Option("--on-interrupt", help="what Ctrl-C does: ask, cancel or detach")
    ] = "ask",
    puller_url: PullerUrl = None,
    token: Token = None,
    env_file: EnvFile = None,
    as_json: AsJson = False,
) -> None:
    """Pull a model on the server and show its progress (joins a running pull of the same model).

    Example: modelhub pull llama3.2:1b
    """
    # `pull` sits on the root app, whose group does not report errors: do it here.
    try:
        _pull(model, target, detach, on_interrupt, resolve(puller_url, token, env_file), as_json)
    except CliError as exc:
        render.print_error(exc)
        raise typer.Exit(1) from None


def _pull(model: str, target: str, detach: bool, on_interrupt: str, where: Target, as_json: bool) -> None:
    if target not in ("store", "ollama"):
        raise CliError(f"--target must be store or ollama, not {target!r}")
    if on_interrupt not in ("ask", "cancel", "detach"):
        raise CliError(f"--on-interrupt must be ask, cancel or detach, not {on_interrupt!r}")
    with PullerClient(where.url, where.token) as client:
        started = client.start(model, target)
        if not started.get("created"):
            render.note(f"following the pull already running for {started.get('model')} ({started['id']})")
        if detach:
            if as_json:
                render.print_json(started)
            else:
                render.success(f"pull {started['id']} started")
            return
        try:
            final = follow(client, started)
        except KeyboardInterrupt:
            choice = on_interrupt if on_interrupt != "ask" else ask_on_interrupt()
            if choice == "cancel":
                cancelled = client.cancel(str(started["id"]))
                render.note(f"pull {started['id']} is {cancelled.get('state')} (cancelled on the server)")
                raise typer.Exit(130) from None
            render.note(f"detached: pull {started['id']} goes on; run `modelhub pull {model}` to follow it again")
            return
        if as_json:
            render.print_json(final)
        report(final)


def _pulls_table(items: list[JsonObject]) -> Any:
    rows = (
        [
            p.get("id"),
            p.get("base_model_id"),
            p.get("target"),
            p.get("state"),
            p.get("status"),
            f"{_percent(p)}",
            p.get("requested_by"),
            (p.get("error") or {}).get("code"),
            p.get("created_at"),
        ]
        for p in items
    )
    return render.table(["id", "model", "target", "state", "status", "done", "by", "error", "created"], rows)


def _percent(pull: JsonObject) -> str:
    total = int(pull.get("total_bytes") or 0)
    return f"{100 * int(pull.get('completed_bytes') or 0) // total}%" if total else "-"


@pulls_app.callback()
def pulls(
    ctx: typer.Context,
    active: Annotated[bool, typer.Option("--active", help="only queued and running pulls")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="how many")] = None,
    puller_url: PullerUrl = None,
    token: Token = None,
    env_file: EnvFile = None,
    as_json: AsJson = False,
) -> None:
    """List pull jobs: running ones first, then recent ones.

    Example: modelhub pulls --active
    """
    ctx.obj = (puller_url, token, env_file)
    if ctx.invoked_subcommand is not None:
        return
    where = resolve(puller_url, token, env_file)
    with PullerClient(where.url, where.token) as client:
        items = client.list(active=active, limit=limit)
    if as_json:
        render.print_json({"items": items})
        return
    render.show(_pulls_table(items))


@pulls_app.command("cancel")
def cancel(ctx: typer.Context, pull_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a pull (whichever puller replica runs it stops).

    Example: modelhub pulls cancel 0b6e…
    """
    where = resolve(*ctx.obj)
    with PullerClient(where.url, where.token) as client:
        result = client.cancel(pull_id)
    render.success(f"pull {pull_id} is {result.get('state')}")


@pulls_app.command("show")
def show(ctx: typer.Context, pull_id: Annotated[str, typer.Argument(metavar="ID")], as_json: AsJson = False) -> None:
    """Show one pull: state, bytes per layer, error."""
    where = resolve(*ctx.obj)
    with PullerClient(where.url, where.token) as client:
        result = client.get(pull_id)
    if as_json:
        render.print_json(result)
        return
    render.show(_pulls_table([result]))
    layers = result.get("layers") or []
    if layers:
        rows = (
            [
                layer.get("media_type"),
                layer.get("digest"),
                layer.get("completed_bytes"),
                layer.get("total_bytes"),
                layer.get("state"),
            ]
            for layer in layers
        )
        render.show(render.table(["media type", "digest", "done", "total", "state"], rows, title="layers"))
