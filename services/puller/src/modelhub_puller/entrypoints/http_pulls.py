"""``/api/v1/pulls``: request, follow, list and cancel pulls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from modelhub_common.events import EventEnvelope
from modelhub_common.webapp import CurrentPrincipal
from modelhub_puller.domain.names import NAME_PATTERN
from modelhub_puller.domain.pull import PullJob, Target
from modelhub_puller.entrypoints.deps import Svc
from modelhub_puller.service_layer import events

router = APIRouter(prefix="/api/v1", tags=["pulls"])

_KEEPALIVE_SECONDS = 10.0


class PullRequest(BaseModel):
    model: str = Field(
        min_length=1,
        max_length=600,
        description="A model name as users type it, e.g. llama3.2:1b",
        # Documented, and checked by the name parser (whose refusals say which part is wrong).
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    target: Literal["store", "ollama"] = "store"


@router.post("/pulls", status_code=202, summary="Start a pull, or join the running pull of the same model")
async def create_pull(body: PullRequest, principal: CurrentPrincipal, svc: Svc, response: Response) -> dict[str, Any]:
    job, created = await svc.pulls.request(principal, body.model, Target(body.target))
    response.headers["Location"] = f"/api/v1/pulls/{job.id}"
    return {**job.to_json(), "created": created}


@router.get("/pulls", summary="Active pulls first, then recent ones")
async def list_pulls(
    principal: CurrentPrincipal,
    svc: Svc,
    active: Annotated[bool, Query(description="only queued and running pulls")] = False,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    jobs = await svc.pulls.list_jobs(principal, active_only=active, limit=limit or svc.settings.list_limit)
    return {"items": [job.to_json() for job in jobs]}


@router.get("/pulls/{pull_id}", summary="State, bytes done/total overall and per layer, speed, error")
async def get_pull(pull_id: str, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return (await svc.pulls.get(principal, pull_id)).to_json()


@router.delete("/pulls/{pull_id}", summary="Cancel a pull (any replica stops it)")
async def cancel_pull(pull_id: str, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return (await svc.pulls.cancel(principal, pull_id)).to_json()


@router.get(
    "/pulls/{pull_id}/events",
    summary="Progress until the pull ends: NDJSON, or server-sent events with Accept: text/event-stream",
)
async def pull_events(pull_id: str, principal: CurrentPrincipal, svc: Svc, request: Request) -> StreamingResponse:
    job = await svc.pulls.get(principal, pull_id)
    sse = "text/event-stream" in request.headers.get("accept", "")

    def frame(item: dict[str, Any]) -> bytes:
        data = json.dumps(item, separators=(",", ":"))
        return f"event: {item['type']}\ndata: {data}\n\n".encode() if sse else (data + "\n").encode()

    async def stream() -> AsyncIterator[bytes]:
        with svc.bus.listen(job.id) as queue:
            # Read the state after subscribing, so nothing between the two is missed.
            current = await svc.pulls.load(job.id)
            yield frame({"type": "snapshot", "pull": current.to_json()})
            if not current.state.active:
                return
            while True:
                try:
                    envelope = await asyncio.wait_for(queue.get(), timeout=_KEEPALIVE_SECONDS)
                except TimeoutError:
                    current = await svc.pulls.load(job.id)
                    if not current.state.active:
                        yield frame({"type": current.state.value, "pull": current.to_json()})
                        return
                    yield frame({"type": "keepalive"})
                    continue
                item = await _event_item(envelope, svc.pulls.load)
                if item is not None:
                    yield frame(item)
                    if envelope.type in events.FINAL_TYPES:
                        return

    media_type = "text/event-stream" if sse else "application/x-ndjson"
    return StreamingResponse(stream(), media_type=media_type, headers={"Cache-Control": "no-cache"})


async def _event_item(envelope: EventEnvelope, load: Any) -> dict[str, Any] | None:
    kind = envelope.WhichOneof("payload")
    if kind == "pull_progress":
        p = envelope.pull_progress
        return {
            "type": "progress",
            "pull_id": p.pull_id,
            "status": p.status,
            "total_bytes": p.total_bytes,
            "completed_bytes": p.completed_bytes,
            "bytes_per_second": round(p.bytes_per_second, 1),
            "layers": [
                {
                    "digest": layer.digest,
                    "media_type": layer.media_type,
                    "total_bytes": layer.total_bytes,
                    "completed_bytes": layer.completed_bytes,
                }
                for layer in p.layers
            ],
        }
    if envelope.type in events.FINAL_TYPES:
        job: PullJob = await load(envelope.subject_ids.pull_id)
        return {"type": envelope.type.rsplit(".", 1)[-1], "pull": job.to_json()}
    if kind == "pull_cancel_requested":
        return {"type": "cancel_requested", "pull_id": envelope.pull_cancel_requested.pull_id}
    return None
