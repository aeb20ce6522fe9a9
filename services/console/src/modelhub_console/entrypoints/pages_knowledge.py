"""Knowledge: collections, file upload with each file's indexing status (htmx polls it until every file is
done), delete file / collection, and a query preview whose results cite their source file."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from modelhub_console.adapters.rag_client import RagClient
from modelhub_console.entrypoints.web import CheckedSessionDep, Console, ConsoleDep, SessionDep
from modelhub_console.errors import BackendError
from modelhub_console.sessions import Session

router = APIRouter()
# Statuses after which a file's indexing will not move on its own.
SETTLED = {"indexed", "failed"}
QUERY_RESULTS = 5
SNIPPET_CHARS = 400


def _rag(app: Console) -> RagClient:
    if app.rag is None:
        raise BackendError(404, "knowledge_not_configured", "knowledge is not configured for this console")
    return app.rag


def collection_status(collection: dict[str, Any]) -> str:
    """One word for the list: what the files of a collection are doing."""
    files = collection.get("files") or {}
    if collection.get("reindex_required"):
        return "reindex needed"
    if files.get("pending", 0) or files.get("indexing", 0):
        return "indexing"
    if files.get("failed", 0):
        return f"{files['failed']} failed"
    return "indexed" if files.get("total", 0) else "empty"


def citation(result: dict[str, Any]) -> dict[str, Any]:
    text = " ".join(str(result.get("text", "")).split())
    return {
        "file_name": result.get("file_name") or result.get("file_id", ""),
        "snippet": text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rstrip() + "…",
        "score": f"{float(result.get('score') or 0):.3f}",
        "page": result.get("page"),
    }


def _collection_url(knowledge_id: str) -> str:
    return "/knowledge/collection?" + urlencode({"id": knowledge_id})


async def _rows(rag: RagClient, session: Session) -> list[dict[str, Any]]:
    return [
        {
            "id": c["id"],
            "name": c.get("name") or c["id"],
            "description": c.get("description") or "",
            "files": (c.get("files") or {}).get("total", 0),
            "status": collection_status(c),
            "owner": c.get("owner_id", ""),
        }
        for c in await rag.list_collections(session.token)
    ]


@router.get("/knowledge", summary="Knowledge collections the user can read")
async def knowledge_list(request: Request, app: ConsoleDep, session: SessionDep) -> Response:
    rows = await _rows(_rag(app), session)
    return app.page(request, "knowledge.html", session, rows=rows, form={}, errors={})


@router.post("/knowledge/create", summary="Create a collection")
async def create_collection(
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    name: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    rag = _rag(app)
    try:
        created = await rag.create_collection(session.token, name=name.strip(), description=description.strip())
    except BackendError as exc:
        if exc.status not in (400, 409, 422):
            raise
        errors = exc.field_errors() or {"name": exc.message}
        rows = await _rows(rag, session)
        form = {"name": name, "description": description}
        return app.page(request, "knowledge.html", session, status_code=422, rows=rows, form=form, errors=errors)
    app.flash(session, "ok", f"Collection “{created.get('name', name)}” created; upload files to it.")
    return RedirectResponse(_collection_url(created["id"]), status_code=303)


async def _files_context(app: Console, session: Session, knowledge_id: str) -> dict[str, Any]:
    files = await _rag(app).list_files(session.token, knowledge_id)
    return {
        "knowledge_id": knowledge_id,
        "files": files,
        "polling": any(f.get("status") not in SETTLED for f in files),
    }


@router.get("/knowledge/collection", summary="One collection: its files, upload and query preview")
async def collection_page(
    request: Request, app: ConsoleDep, session: SessionDep, id: Annotated[str, Query(max_length=200)]
) -> Response:
    collection = await _rag(app).get_collection(session.token, id)
    context = await _files_context(app, session, id)
    return app.page(
        request, "knowledge_collection.html", session, collection=collection, query="", results=None, **context
    )


@router.get("/knowledge/files", summary="A collection's files and their indexing status (the polled fragment)")
async def files_fragment(
    request: Request, app: ConsoleDep, session: SessionDep, id: Annotated[str, Query(max_length=200)]
) -> Response:
    return app.page(request, "_knowledge_files.html", session, **await _files_context(app, session, id))


@router.post("/knowledge/files/upload", summary="Upload a file to a collection; it is indexed in the background")
async def upload_file(
    app: ConsoleDep,
    session: CheckedSessionDep,
    id: Annotated[str, Form(max_length=200)],
    file: UploadFile,
) -> Response:
    limit = app.settings.max_knowledge_file_bytes
    data = await file.read(limit + 1)
    name = file.filename or "upload"
    if not data:
        app.flash(session, "error", "Choose a file to upload.")
    elif len(data) > limit:
        app.flash(session, "error", f"{name} is larger than the limit of {limit} bytes; split it.")
    else:
        try:
            await _rag(app).upload_file(
                session.token,
                id,
                filename=name,
                data=data,
                content_type=file.content_type or "application/octet-stream",
            )
        except BackendError as exc:
            if exc.status == 404:
                raise
            app.flash(session, "error", f"{name} was not accepted: {exc.message}")
        else:
            app.flash(session, "ok", f"{name} uploaded; it is being indexed.")
    return RedirectResponse(_collection_url(id), status_code=303)


@router.post("/knowledge/files/delete", summary="Remove a file from a collection")
async def delete_file(
    app: ConsoleDep,
    session: CheckedSessionDep,
    id: Annotated[str, Form(max_length=200)],
    file_id: Annotated[str, Form(max_length=200)],
) -> Response:
    try:
        await _rag(app).delete_file(session.token, id, file_id)
    except BackendError as exc:
        app.flash(session, "error", f"The file was not removed: {exc.message}")
    else:
        app.flash(session, "ok", "File removed.")
    return RedirectResponse(_collection_url(id), status_code=303)


@router.post("/knowledge/delete", summary="Delete a collection with its files")
async def delete_collection(
    app: ConsoleDep, session: CheckedSessionDep, id: Annotated[str, Form(max_length=200)]
) -> Response:
    try:
        result = await _rag(app).delete_collection(session.token, id)
    except BackendError as exc:
        if exc.status == 404:
            raise
        app.flash(session, "error", f"The collection was not deleted: {exc.message}")
        return RedirectResponse(_collection_url(id), status_code=303)
    used_by = result.get("used_by_models") or []
    note = f" Models that referred to it: {', '.join(used_by)}." if used_by else ""
    app.flash(session, "ok", f"Collection deleted.{note}")
    return RedirectResponse("/knowledge", status_code=303)


@router.post("/knowledge/query", summary="Search a collection; results cite their source file")
async def query_collection(
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    id: Annotated[str, Form(max_length=200)],
    query: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    query_error = ""
    results: list[dict[str, Any]] = []
    if not query.strip():
        query_error = "Type something to search for."
    else:
        try:
            found = await _rag(app).query(session.token, id, query.strip(), k=QUERY_RESULTS)
        except BackendError as exc:
            # htmx swaps only a successful answer into the page, so its refusal comes back as the fragment.
            if exc.status == 404 and not request.headers.get("hx-request"):
                raise
            query_error = exc.message
        else:
            results = [citation(r) for r in found]
    context: dict[str, Any] = {"knowledge_id": id, "query": query, "results": results, "query_error": query_error}
    if request.headers.get("hx-request"):
        return app.page(request, "_knowledge_results.html", session, **context)
    collection = await _rag(app).get_collection(session.token, id)
    context = {**(await _files_context(app, session, id)), **context}
    return app.page(request, "knowledge_collection.html", session, collection=collection, **context)
