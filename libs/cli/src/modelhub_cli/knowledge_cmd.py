"""``modelhub knowledge ...``: knowledge collections in the rag service (create, add files, query, remove).

Talks to the rag service's REST API (``MODELHUB_RAG_URL``, written to ``.modelhub/endpoints.env`` by
``make up``) with the same bearer token as the other commands. ``add`` uploads files and then shows a
progress bar until every one of them is indexed or has failed.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelhub_cli import render
from modelhub_cli.client import error_from_response, service_http
from modelhub_cli.endpoints import EndpointsError, load_endpoints
from modelhub_cli.errors import ApiError, CliError
from modelhub_cli.session import ReportingGroup

URL_KEY = "MODELHUB_RAG_URL"
TOKEN_KEY = "MODELHUB_TOKEN"
FINAL = ("indexed", "failed")
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class RagOptions:
    rag_url: str | None = None
    token: str | None = None
    env_file: Path | None = None


def _seg(value: str) -> str:
    return quote(value, safe="")


class RagClient:
    """The rag service's REST API; every failure leaves as an :class:`ApiError` with a hint."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = service_http(base_url, token, timeout=timeout, service="rag", hint=_URL_HINT)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
            raise ApiError(
                f"the rag service at {self.base_url} {kind} ({type(exc).__name__})", status=0, hint=_URL_HINT
            ) from exc
        if response.is_error:
            error = error_from_response(response)
            raise ApiError(
                error.message,
                status=error.status,
                code=error.code,
                details=error.details,
                hint=_hint(error.status, error.code),
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        response = self._request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(
                f"the rag service answered {method} {path} with something that is not JSON", status=200
            ) from exc
        if not isinstance(body, dict):
            raise ApiError(f"the rag service answered {method} {path} with an unexpected shape", status=200)
        return body

    def collections(self) -> list[JsonObject]:
        return list(self._json("GET", "/api/v1/knowledge").get("items", []))

    def get(self, knowledge_id: str) -> JsonObject:
        return self._json("GET", f"/api/v1/knowledge/{_seg(knowledge_id)}")

    def create(self, body: JsonObject) -> JsonObject:
        return self._json("POST", "/api/v1/knowledge", json=body)

    def delete(self, knowledge_id: str) -> JsonObject:
        return self._json("DELETE", f"/api/v1/knowledge/{_seg(knowledge_id)}")

    def reindex(self, knowledge_id: str) -> JsonObject:
        return self._json("POST", f"/api/v1/knowledge/{_seg(knowledge_id)}/reindex")

    def upload(self, knowledge_id: str, path: Path) -> JsonObject:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as handle:
            files = {"file": (path.name, handle, content_type)}
            return self._json("POST", f"/api/v1/knowledge/{_seg(knowledge_id)}/files", files=files)

    def files(self, knowledge_id: str) -> list[JsonObject]:
        return list(self._json("GET", f"/api/v1/knowledge/{_seg(knowledge_id)}/files").get("items", []))

    def delete_file(self, knowledge_id: str, file_id: str) -> None:
        self._request("DELETE", f"/api/v1/knowledge/{_seg(knowledge_id)}/files/{_seg(file_id)}")

    def retrieve(self, knowledge_ids: list[str], query: str, k: int, mode: str) -> list[JsonObject]:
        body = {"knowledge_ids": knowledge_ids, "query": query, "k": k, "mode": mode}
        return list(self._json("POST", "/api/v1/retrieve", json=body).get("results", []))


_URL_HINT = (
    f"start the stack with `make up` (`modelhub status` shows what runs), or set {URL_KEY} / --rag-url "
    "to a running rag service"
)


def _hint(status: int, code: str) -> str | None:
    if status == 401:
        return "the token is missing or expired: set MODELHUB_TOKEN or pass --token"
    if status == 403:
        return "ask the collection's owner or an admin to share it with you"
    if status == 404:
        return "check the id: `modelhub knowledge list` shows the collections you can read"
    if status == 413:
        return "split the file, or ask an admin to raise MODELHUB_RAG_MAX_FILE_BYTES"
    if status == 415:
        return "supported files: txt, md, html, pdf, docx, csv, json"
    if code == "reindex_required":
        return "run `modelhub knowledge reindex ID`"
    if status >= 500:
        return "the rag service failed: `make logs` shows why"
    return None


def _record_options(
    ctx: typer.Context,
    rag_url: Annotated[
        str | None,
        typer.Option("--rag-url", help=f"the rag service's base URL (default: ${URL_KEY}, then endpoints.env)"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help=f"bearer token (default: ${TOKEN_KEY}, then endpoints.env)", show_default=False),
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="endpoints file to read instead of .modelhub/endpoints.env")
    ] = None,
) -> None:
    ctx.obj = RagOptions(rag_url, token, env_file)


app = typer.Typer(
    help="Knowledge collections: documents that model files are grounded on (retrieval with citations).",
    cls=ReportingGroup,
    callback=_record_options,
    no_args_is_help=True,
    add_completion=False,
)


@contextmanager
def _client(ctx: typer.Context) -> Iterator[RagClient]:
    options = ctx.find_object(RagOptions) or RagOptions()
    try:
        endpoints = load_endpoints(options.env_file)
    except EndpointsError as exc:
        raise CliError(str(exc)) from exc
    url = options.rag_url or endpoints.get(URL_KEY)
    if not url:
        raise CliError("no rag service URL is configured", hint=f"run `make up`, set {URL_KEY}, or pass --rag-url")
    token = options.token or endpoints.get(TOKEN_KEY)
    if not token:
        raise CliError("no token is configured", hint=f"run `make up`, set {TOKEN_KEY}, or pass --token")
    client = RagClient(url, token)
    try:
        yield client
    finally:
        client.close()


KnowledgeId = Annotated[str, typer.Argument(metavar="ID", help="the collection's id (`modelhub knowledge list`)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the service's raw JSON (for scripts)")]


def _files_table(files: list[JsonObject]) -> Any:
    rows = (
        [
            f.get("id"),
            f.get("name"),
            f.get("kind"),
            f.get("status"),
            f.get("chunks"),
            (f.get("error") or {}).get("message") if f.get("error") else None,
        ]
        for f in files
    )
    return render.table(["id", "name", "kind", "status", "chunks", "error"], rows)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="display name")],
    description: Annotated[str, typer.Option("--description", help="what the documents are about")] = "",
    public: Annotated[bool, typer.Option("--public", help="every user may read it")] = False,
    as_json: AsJson = False,
) -> None:
    """Create a collection; prints its id."""
    with _client(ctx) as client:
        created = client.create({"name": name, "description": description, "public_read": public})
    if as_json:
        render.print_json(created)
        return
    # The id alone on stdout, so that `KB=$(modelhub knowledge create NAME)` works.
    render.success(f"created knowledge '{created['name']}'", err=True)
    typer.echo(created["id"])


@app.command("list")
def list_collections(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Collections you can read, with their file counts."""
    with _client(ctx) as client:
        items = client.collections()
    if as_json:
        render.print_json(items)
        return
    rows = (
        [
            c.get("id"),
            c.get("name"),
            (c.get("files") or {}).get("total"),
            (c.get("files") or {}).get("indexed"),
            (c.get("files") or {}).get("failed"),
            c.get("chunks"),
            c.get("owner_id"),
            c.get("used_by_models"),
        ]
        for c in items
    )
    render.show(render.table(["id", "name", "files", "indexed", "failed", "chunks", "owner", "used by"], rows))


def _wait(client: RagClient, knowledge_id: str, file_ids: list[str], timeout: float) -> list[JsonObject]:
    """Shows a progress bar until every file in ``file_ids`` is indexed or failed; returns their records."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=render.stderr(), transient=True) as progress:
        task = progress.add_task("", total=len(file_ids))
        while True:
            mine = [f for f in client.files(knowledge_id) if f.get("id") in file_ids]
            done = [f for f in mine if f.get("status") in FINAL]
            busy = [str(f.get("name")) for f in mine if f.get("status") == "indexing"]
            progress.update(task, completed=len(done), description=", ".join(busy[:3]))
            if len(done) >= len(file_ids) or len(mine) < len(file_ids):
                return mine
            if time.monotonic() > deadline:
                raise CliError(
                    f"{len(file_ids) - len(done)} file(s) are still being indexed after {timeout:.0f}s",
                    hint=f"`modelhub knowledge files {knowledge_id}` shows their status later",
                )
            time.sleep(0.5)


@app.command("add")
def add(
    ctx: typer.Context,
    knowledge_id: KnowledgeId,
    paths: Annotated[
        list[Path], typer.Argument(metavar="FILES...", help="files to upload", exists=True, dir_okay=False)
    ],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait until the files are indexed")] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for indexing")] = 600,
) -> None:
    """Upload files; by default waits (with a progress bar) until they are indexed."""
    uploaded: list[str] = []
    with _client(ctx) as client:
        for path in paths:
            try:
                record = client.upload(knowledge_id, path)
            except ApiError as exc:
                if exc.code == "duplicate_file":
                    render.note(f"{path.name}: already in the collection, skipped")
                    continue
                raise
            uploaded.append(str(record["id"]))
            render.stdout().print(f"uploaded {path.name} ({record.get('kind')})", highlight=False)
        if not wait or not uploaded:
            return
        files = _wait(client, knowledge_id, uploaded, timeout)
    render.show(_files_table(files))
    failed = [f for f in files if f.get("status") == "failed"]
    if failed:
        raise CliError(f"{len(failed)} of {len(files)} file(s) failed to index", hint="the table above says why")
    render.success(f"{len(files)} file(s) indexed")


@app.command("files")
def files(ctx: typer.Context, knowledge_id: KnowledgeId, as_json: AsJson = False) -> None:
    """Files of a collection and their indexing status."""
    with _client(ctx) as client:
        items = client.files(knowledge_id)
    if as_json:
        render.print_json(items)
    else:
        render.show(_files_table(items))


@app.command("query")
def query(
    ctx: typer.Context,
    knowledge_id: KnowledgeId,
    text: Annotated[str, typer.Argument(metavar="QUERY", help="what to look for")],
    k: Annotated[int, typer.Option("-k", "--top", help="how many chunks")] = 5,
    also: Annotated[list[str] | None, typer.Option("--also", help="search another collection too")] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid (default), vector or text")] = "hybrid",
    as_json: AsJson = False,
) -> None:
    """Search collections; shows the best chunks with where they come from."""
    with _client(ctx) as client:
        results = client.retrieve([knowledge_id, *(also or [])], text, k, mode)
    if as_json:
        render.print_json(results)
        return
    rows = (
        [
            f"{r.get('score', 0):.4f}",
            r.get("file_name"),
            r.get("page"),
            f"{r.get('start_offset')}-{r.get('end_offset')}",
            " ".join(str(r.get("text", "")).split())[:300],
        ]
        for r in results
    )
    render.show(render.table(["score", "file", "page", "chars", "text"], rows))


@app.command("rm")
def remove(
    ctx: typer.Context,
    knowledge_id: KnowledgeId,
    file_id: Annotated[str | None, typer.Option("--file", help="remove only this file")] = None,
) -> None:
    """Delete a collection (with its files and chunks), or one file of it."""
    with _client(ctx) as client:
        if file_id is not None:
            client.delete_file(knowledge_id, file_id)
            render.success(f"removed file {file_id}")
            return
        result = client.delete(knowledge_id)
    render.success(f"deleted knowledge {knowledge_id}")
    if result.get("used_by_models"):
        render.note(f"model files still refer to it: {', '.join(result['used_by_models'])}")


@app.command("reindex")
def reindex(ctx: typer.Context, knowledge_id: KnowledgeId) -> None:
    """Embed every file again (after the embedder or chunking changed)."""
    with _client(ctx) as client:
        result = client.reindex(knowledge_id)
    render.success(f"{result.get('files')} file(s) queued for re-indexing with {result.get('embedder')}")
