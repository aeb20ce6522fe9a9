"""``POST /api/v1/retrieve``: the chat gateway's entry point into knowledge.

Body ``{"knowledge_ids": [...], "query": str, "k": int}`` → ``{"results": [{"knowledge_id", "file_id",
"file_name", "text", "score", "page", "start_offset", "end_offset"}]}``, best first. An id the caller cannot
read is a 403 naming it; an unknown id a 404 naming it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelhub_rag.entrypoints.deps import CurrentPrincipal, ServicesDep
from modelhub_rag.entrypoints.schemas import RetrieveBody, result_json

router = APIRouter(prefix="/api/v1", tags=["retrieval"])


@router.post("/retrieve", summary="Search several collections at once (hybrid: vector + full text)")
async def retrieve(body: RetrieveBody, principal: CurrentPrincipal, svc: ServicesDep) -> dict[str, Any]:
    results = await svc.retrieval.retrieve(
        principal, body.knowledge_ids, body.query, body.k, file_ids=body.file_ids, mode=body.mode
    )
    return {"results": [result_json(r) for r in results]}
