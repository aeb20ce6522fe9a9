"""``POST /api/v1/retrieve``: the chat gateway's entry point into knowledge.

Body ``{"knowledge_ids": [...], "query": str, "k": int}`` → ``{"results": [{"knowledge_id", "file_id",
"file_name", "text", "score", "page", "start_offset", "end_offset"}]}``, best first. An id the caller cannot
read is a 403 naming it; an unknown id a 404 naming it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from modelhub_common.webapp import CurrentPrincipal
from modelhub_rag.entrypoints.deps import ServicesDep
from modelhub_rag.entrypoints.schemas import RESULTS_RESPONSE, RetrieveBody, results_response

router = APIRouter(prefix="/api/v1", tags=["retrieval"])


@router.post(
    "/retrieve", summary="Search several collections at once (hybrid: vector + full text)", responses=RESULTS_RESPONSE
)
async def retrieve(body: RetrieveBody, principal: CurrentPrincipal, svc: ServicesDep) -> Response:
    timings: dict[str, float] = {}
    results = await svc.retrieval.retrieve(
        principal, body.knowledge_ids, body.query, body.k, file_ids=body.file_ids, mode=body.mode, timings=timings
    )
    return results_response(results, timings)
