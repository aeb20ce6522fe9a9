"""REST routes for filters (admins only): ``/api/v1/filters`` and, for the chat gateway's service token,
``/api/v1/filter-configs?ids=a,b`` (several configs at once, webhook secrets included).

The batch lives on a path of its own rather than under ``/filters/...`` so that no filter id (``configs`` is
a valid slug) is shadowed by a route, and so the list route never answers secrets.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from modelhub_common.openapi_links import links_to
from modelhub_common.webapp import AdminPrincipal
from modelhub_registry.domain.filter import FILTER_ID_RE
from modelhub_registry.entrypoints.deps import Services, services
from modelhub_registry.errors import InvalidModelError, RegistryError
from modelhub_registry.service_layer.filters import FilterService

_ID = "[a-z0-9][a-z0-9._-]{0,63}"
#: What the batch route takes, documented (the route checks the configured limit and names a bad id).
_IDS_PATTERN = f"^{_ID}(,{_ID}){{0,199}}$"

router = APIRouter(prefix="/api/v1", tags=["filters"])


class FilterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="slug model files name: a-z, 0-9, '.', '_', '-'")
    name: str | None = Field(None, max_length=256, description="defaults to the id")
    description: str = Field("", max_length=4000)
    kind: str = Field(description="redact, block, prepend, append, max_length or webhook")
    direction: str = Field("both", description="inlet (the user's message), outlet (the answer) or both")
    config: dict[str, Any] = Field(description="the kind's settings (see the README's Filters section)")
    enabled: bool = True


def _filters(svc: Services) -> FilterService:
    if svc.filters is None:
        raise RegistryError("filters are not wired in this registry", code="not_configured")
    return svc.filters


def _list_row(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in ("id", "name", "kind", "direction", "enabled", "has_secret", "version")}


_ONE = "/api/v1/filters/{filter_id}"
_FILTER_LINKS = links_to(
    201,
    "filter_id",
    {
        "GetFilter": ("GET", _ONE),
        "GetConfig": ("GET", f"{_ONE}/config"),
        "ChangeFilter": ("PATCH", _ONE),
        "DeleteFilter": ("DELETE", _ONE),
    },
)


@router.post("/filters", status_code=201, summary="Configure a filter", responses=_FILTER_LINKS)
async def create_filter(
    body: FilterIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    data = body.model_dump()
    data["name"] = body.name or body.id
    return (await _filters(svc).create(data, principal)).admin_json()


@router.get("/filters", summary="Every filter, one row each (webhook secrets never shown)")
async def list_filters(principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return {"items": [_list_row(item.admin_json()) for item in await _filters(svc).list_all()]}


@router.get(
    "/filter-configs",
    summary="Several filters as the chat gateway runs them, secrets included; unknown and disabled ids are absent",
)
async def filter_configs(
    principal: AdminPrincipal,
    svc: Annotated[Services, Depends(services)],
    ids: Annotated[
        str,
        Query(
            description="comma-separated filter ids, in the order they run (at most max_filters, 200 by default)",
            max_length=20_000,
            json_schema_extra={"pattern": _IDS_PATTERN},
        ),
    ],
) -> dict[str, Any]:
    # Exactly the documented pattern: no blanks, no empty items (the gateway never sends them).
    wanted = ids.split(",")
    limit = svc.settings.max_filters
    if len(wanted) > max(limit, 1):
        raise InvalidModelError(f"ids: at most {limit} ids at once (setting max_filters)")
    bad = next((i for i in wanted if not FILTER_ID_RE.fullmatch(i)), None)
    if bad is not None:
        raise InvalidModelError(f"ids: '{bad[:80]}' is not a filter id (a-z, 0-9, '.', '_', '-')")
    return {"items": [item.config_json() for item in await _filters(svc).configs(wanted)]}


@router.get("/filters/{filter_id}", summary="One filter (a webhook's secret is shown as has_secret)")
async def get_filter(
    filter_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return (await _filters(svc).get(filter_id)).admin_json()


@router.get("/filters/{filter_id}/config", summary="One filter as the chat gateway runs it, secret included")
async def get_filter_config(
    filter_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return (await _filters(svc).get(filter_id)).config_json()


@router.patch(
    "/filters/{filter_id}",
    summary="Change a filter: the given fields; config is merged into the stored one (null removes a key)",
)
async def update_filter(
    filter_id: str,
    principal: AdminPrincipal,
    svc: Annotated[Services, Depends(services)],
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    return (await _filters(svc).update(filter_id, body, principal)).admin_json()


@router.delete("/filters/{filter_id}", status_code=204, summary="Remove a filter")
async def delete_filter(
    filter_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await _filters(svc).delete(filter_id, principal)
    return Response(status_code=204)
