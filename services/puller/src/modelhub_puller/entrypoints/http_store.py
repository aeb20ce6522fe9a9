"""``/api/v1/store/models``: what the model store holds, and deleting a model from it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from modelhub_common.webapp import CurrentPrincipal
from modelhub_puller.domain.names import NAME_PATTERN
from modelhub_puller.entrypoints.deps import Svc

router = APIRouter(prefix="/api/v1/store", tags=["store"])


@router.get("/models", summary="Models in the store (pulled or imported)")
async def list_stored(principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return {"items": [m.to_json() for m in await svc.stored.list_models(principal)]}


@router.delete("/models/{model:path}", summary="Delete a model: its manifest and the blobs no other model uses")
async def delete_stored(
    model: Annotated[
        str, Path(description="The model's name, e.g. llama3.2:1b", json_schema_extra={"pattern": NAME_PATTERN})
    ],
    principal: CurrentPrincipal,
    svc: Svc,
) -> dict[str, Any]:
    stored, removed = await svc.stored.delete(principal, model)
    return {"deleted": stored.to_json(), "removed_blobs": removed}
