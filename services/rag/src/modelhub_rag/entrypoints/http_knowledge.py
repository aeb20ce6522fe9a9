"""REST routes for knowledge collections and their files under ``/api/v1/knowledge``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Header, Query, Request, Response, UploadFile

from modelhub_common.if_match import IF_MATCH_PATTERN, parse_if_match
from modelhub_common.openapi_links import links_to
from modelhub_common.webapp import AdminPrincipal, CurrentPrincipal
from modelhub_rag.domain.collection import FileStatus
from modelhub_rag.entrypoints.deps import ServicesDep
from modelhub_rag.entrypoints.schemas import (
    RESULTS_RESPONSE,
    CreateCollectionBody,
    PatchCollectionBody,
    QueryBody,
    collection_json,
    file_json,
    results_response,
)
from modelhub_rag.errors import FileTooLargeError, InvalidRequestError
from modelhub_rag.service_layer.collections import CollectionChanges

router = APIRouter(prefix="/api/v1", tags=["knowledge"])

# Room for the multipart envelope around the file when judging Content-Length before reading the body.
_MULTIPART_OVERHEAD = 64 * 1024


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    try:
        return parse_if_match(if_match)
    except ValueError as exc:
        raise InvalidRequestError('If-Match: must be the collection\'s version number, e.g. "3"') from exc


@router.get("/knowledge", summary="Knowledge collections the caller can read")
async def list_collections(principal: CurrentPrincipal, svc: ServicesDep) -> dict[str, Any]:
    return {"items": [collection_json(v) for v in await svc.collections.list_readable(principal)]}


_ONE = "/api/v1/knowledge/{knowledge_id}"
#: What a client can do next with the collection it created, by the id in the answer.
_COLLECTION_LINKS = links_to(
    201,
    "knowledge_id",
    {
        "GetCollection": ("GET", _ONE),
        "ChangeCollection": ("PATCH", _ONE),
        "DeleteCollection": ("DELETE", _ONE),
        "ListFiles": ("GET", f"{_ONE}/files"),
        "AddFile": ("POST", f"{_ONE}/files"),
        "Query": ("POST", f"{_ONE}/query"),
        "Reindex": ("POST", f"{_ONE}/reindex"),
    },
)


@router.post("/knowledge", status_code=201, summary="Create a knowledge collection", responses=_COLLECTION_LINKS)
async def create_collection(
    body: CreateCollectionBody, principal: CurrentPrincipal, svc: ServicesDep
) -> dict[str, Any]:
    view = await svc.collections.create(
        principal,
        name=body.name,
        description=body.description,
        public_read=body.public_read,
        grants=[g.to_grant() for g in body.grants],
    )
    return collection_json(view)


@router.get("/knowledge/{knowledge_id}", summary="One collection with file counts and the models using it")
async def get_collection(knowledge_id: str, principal: CurrentPrincipal, svc: ServicesDep) -> dict[str, Any]:
    return collection_json(await svc.collections.get(knowledge_id, principal))


@router.patch("/knowledge/{knowledge_id}", summary="Rename, describe, or change who has access")
async def patch_collection(
    knowledge_id: str,
    body: PatchCollectionBody,
    principal: CurrentPrincipal,
    svc: ServicesDep,
    if_match: Annotated[
        str,
        Header(
            description="the version you edited, to refuse lost updates",
            json_schema_extra={"pattern": IF_MATCH_PATTERN},
        ),
    ] = "",
) -> dict[str, Any]:
    changes = CollectionChanges(
        name=body.name,
        description=body.description,
        public_read=body.public_read,
        grants=[g.to_grant() for g in body.grants] if body.grants is not None else None,
    )
    view = await svc.collections.update(knowledge_id, changes, principal, expected_version=_version(if_match))
    return collection_json(view)


@router.delete("/knowledge/{knowledge_id}", summary="Delete a collection with its files, chunks and objects")
async def delete_collection(knowledge_id: str, principal: CurrentPrincipal, svc: ServicesDep) -> dict[str, Any]:
    used_by = await svc.collections.delete(knowledge_id, principal)
    return {"deleted": knowledge_id, "used_by_models": used_by}


@router.post("/knowledge/{knowledge_id}/reindex", status_code=202, summary="Embed every file again")
async def reindex_collection(knowledge_id: str, principal: CurrentPrincipal, svc: ServicesDep) -> dict[str, Any]:
    result = await svc.collections.reindex(knowledge_id, principal)
    return {"knowledge_id": result.collection_id, "files": result.files, "embedder": result.embedder}


@router.post(
    "/knowledge/{knowledge_id}/files", status_code=202, summary="Upload a file; it is indexed in the background"
)
async def upload_file(
    knowledge_id: str,
    request: Request,
    principal: CurrentPrincipal,
    svc: ServicesDep,
    file: Annotated[UploadFile, File(description="txt, md, html, pdf, docx, csv or json")],
) -> dict[str, Any]:
    limit = svc.settings.max_file_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + _MULTIPART_OVERHEAD:
        svc.files.check_size(int(length) - _MULTIPART_OVERHEAD, file.filename or "the upload")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(
            f"{file.filename or 'the upload'} is larger than the limit of {limit} bytes; split it",
            details={"limit_bytes": limit},
        )
    stored = await svc.files.upload(
        knowledge_id, principal, filename=file.filename, data=data, declared_type=file.content_type
    )
    return file_json(stored)


@router.get("/knowledge/{knowledge_id}/files", summary="Files of a collection with their indexing status")
async def list_files(
    knowledge_id: str,
    principal: CurrentPrincipal,
    svc: ServicesDep,
    status: Annotated[FileStatus | None, Query()] = None,
) -> dict[str, Any]:
    files = await svc.files.list_files(knowledge_id, principal, status=status)
    return {"items": [file_json(f) for f in files]}


@router.get("/knowledge/{knowledge_id}/files/{file_id}", summary="One file and its status")
async def get_file(knowledge_id: str, file_id: str, principal: CurrentPrincipal, svc: ServicesDep) -> dict[str, Any]:
    return file_json(await svc.files.get_file(knowledge_id, file_id, principal))


@router.delete(
    "/knowledge/{knowledge_id}/files/{file_id}", status_code=204, summary="Remove a file, its chunks, its object"
)
async def delete_file(knowledge_id: str, file_id: str, principal: CurrentPrincipal, svc: ServicesDep) -> Response:
    await svc.files.delete_file(knowledge_id, file_id, principal)
    return Response(status_code=204)


@router.post("/knowledge/{knowledge_id}/query", summary="Search one collection", responses=RESULTS_RESPONSE)
async def query_collection(
    knowledge_id: str, body: QueryBody, principal: CurrentPrincipal, svc: ServicesDep
) -> Response:
    timings: dict[str, float] = {}
    results = await svc.retrieval.retrieve(
        principal, [knowledge_id], body.query, body.k, file_ids=body.file_ids, mode=body.mode, timings=timings
    )
    return results_response(results, timings)


@router.get("/model-references/dangling", summary="Model files referring to collections that do not exist (admins)")
async def dangling_references(principal: AdminPrincipal, svc: ServicesDep) -> dict[str, Any]:
    pairs = await svc.references.dangling()
    return {"items": [{"model_id": model_id, "knowledge_id": knowledge_id} for model_id, knowledge_id in pairs]}
