"""Request bodies and response shapes of the REST API (the contract other services and the CLI rely on)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from modelhub_rag.domain.collection import FILE_STATUSES, Grant, KnowledgeFile
from modelhub_rag.service_layer.collections import CollectionView
from modelhub_rag.service_layer.retrieval import RetrievedChunk


class GrantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal_type: Literal["user", "group"]
    principal_id: str = Field(min_length=1, max_length=256)
    permission: Literal["read", "write"]

    def to_grant(self) -> Grant:
        return Grant(self.principal_type, self.principal_id, self.permission)


class CreateCollectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    public_read: StrictBool = False  # JSON's true or false; lax mode would also take 0, 1 and "yes"
    grants: list[GrantBody] = Field(default_factory=list)


class PatchCollectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1)
    description: str | None = None
    public_read: StrictBool | None = None
    grants: list[GrantBody] | None = None


#: Has a character that is not whitespace (as ``str.strip`` counts it).
NOT_BLANK = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The documented bounds are the settings' defaults (MODELHUB_RAG_MAX_QUERY_CHARS, _MAX_K); the service
    # checks its configured values and names the field it refuses.
    query: str = Field(
        description="what to search for (not blank)", json_schema_extra={"pattern": NOT_BLANK, "maxLength": 4_000}
    )
    k: int | None = Field(
        default=None,
        description="results wanted (default 5; at most the service's max_k, 50 unless configured)",
        json_schema_extra={"minimum": 1, "maximum": 50},
    )
    file_ids: list[str] | None = Field(default=None, description="search only these files")
    mode: Literal["hybrid", "vector", "text"] = "hybrid"


class RetrieveBody(QueryBody):
    knowledge_ids: list[str] = Field(
        min_length=1,
        description="at most 32 unless configured (MODELHUB_RAG_MAX_KNOWLEDGE_IDS)",
        json_schema_extra={"maxItems": 32},
    )


def grant_json(grant: Grant) -> dict[str, str]:
    return {"principal_type": grant.principal_type, "principal_id": grant.principal_id, "permission": grant.permission}


def collection_json(view: CollectionView) -> dict[str, Any]:
    c = view.collection
    files: dict[str, int] = {status: view.counts.by_status.get(status, 0) for status in FILE_STATUSES}
    files["total"] = view.counts.files
    return {
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "owner_id": c.owner_id,
        "public_read": c.public_read,
        "grants": [grant_json(g) for g in c.grants],
        "embedder": c.embedder,
        "dimensions": c.dimensions,
        "reindex_required": view.reindex_required,
        "files": files,
        "chunks": view.counts.chunks,
        "used_by_models": view.used_by_models,
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
        "version": c.version,
    }


def file_json(f: KnowledgeFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "knowledge_id": f.collection_id,
        "name": f.name,
        "kind": f.kind,
        "content_type": f.content_type,
        "size_bytes": f.size_bytes,
        "sha256": f.sha256,
        "status": f.status,
        "error": {"code": f.error_code, "message": f.error_message} if f.status == "failed" else None,
        "chunks": f.chunk_count,
        "embedder": f.embedder,
        "attempts": f.attempts,
        "uploaded_by": f.uploaded_by,
        "created_at": f.created_at.isoformat(),
        "updated_at": f.updated_at.isoformat(),
        "indexed_at": f.indexed_at.isoformat() if f.indexed_at else None,
    }


def result_json(chunk: RetrievedChunk) -> dict[str, Any]:
    return {
        "knowledge_id": chunk.knowledge_id,
        "file_id": chunk.file_id,
        "file_name": chunk.file_name,
        "text": chunk.text,
        "score": chunk.score,
        "page": chunk.page,
        "start_offset": chunk.start_offset,
        "end_offset": chunk.end_offset,
    }


class ResultsBody(BaseModel):
    results: list[RetrievedChunk]


# Documents the shape of :func:`results_response` in the OpenAPI schema (the body itself is encoded directly).
RESULTS_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"model": ResultsBody, "description": "best chunks first"}}


def results_response(results: Sequence[RetrievedChunk], timings: Mapping[str, float]) -> Response:
    """``{"results": [...]}``, encoded here: retrieval's rows are plain values and need no model validation.

    ``Server-Timing`` carries the milliseconds each step took (embedding, each ranker, the access check), so
    a slow query can be explained from the client side, and browsers' developer tools show it.
    """
    body = json.dumps({"results": [result_json(r) for r in results]}, ensure_ascii=False, separators=(",", ":"))
    server_timing = ", ".join(f"{name};dur={value:.2f}" for name, value in timings.items())
    return Response(body.encode(), media_type="application/json", headers={"Server-Timing": server_timing})
