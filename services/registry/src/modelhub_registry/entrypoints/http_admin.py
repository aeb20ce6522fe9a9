"""REST routes for base models, connections, users, groups and tokens."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from modelhub_common.openapi_links import links_to
from modelhub_common.webapp import AdminPrincipal, CurrentPrincipal
from modelhub_registry.domain.base_model import BaseModelRecord
from modelhub_registry.domain.model_file import ID_PATTERN, id_problem
from modelhub_registry.entrypoints.deps import Services, services
from modelhub_registry.errors import InvalidModelError

router = APIRouter(prefix="/api/v1")

_ID = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


class BaseModelIn(BaseModel):
    # Documented; the route checks it with id_problem and names the field.
    id: str = Field(min_length=1, max_length=256, json_schema_extra={"pattern": ID_PATTERN})
    name: str | None = Field(None, max_length=256)
    # "local": weights already in the model store (details.model_digest names the GGUF blob).
    source: Literal["manual", "local"] = "manual"
    capabilities: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)


class ConnectionIn(BaseModel):
    type: Literal["ollama", "openai"]
    url: str = Field(min_length=1, max_length=2048)
    name: str | None = Field(None, max_length=256)
    api_key: str | None = Field(None, max_length=4096)


class UserIn(BaseModel):
    id: str = _ID
    name: str = Field(min_length=1, max_length=256)
    email: str | None = Field(None, max_length=320)
    role: Literal["admin", "user"] = "user"


class GroupIn(BaseModel):
    id: str = _ID
    name: str = Field(min_length=1, max_length=256)


class TokenIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    ttl_seconds: int = Field(30 * 24 * 3600, ge=60)


# ---- base models (anyone may list; admins register and remove)


@router.get("/base-models", tags=["base models"], summary="Base models model files can be built on")
async def list_base_models(
    principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)], include_unavailable: bool = False
) -> dict[str, Any]:
    items = await svc.base_models.list_all(include_unavailable=include_unavailable)
    return {"items": [item.model_dump(mode="json") for item in items]}


@router.post(
    "/base-models",
    tags=["base models"],
    status_code=201,
    summary="Register a base model by hand",
    responses=links_to(201, "model_id", {"DeleteBaseModel": ("DELETE", "/api/v1/base-models/{model_id}")}),
)
async def register_base_model(
    body: BaseModelIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    if (problem := id_problem(body.id)) is not None:
        raise InvalidModelError(f"id: {problem}")
    record = BaseModelRecord(
        id=body.id,
        name=body.name or body.id,
        source=body.source,
        capabilities=body.capabilities,
        details=body.details,
        params=body.params,
    )
    await svc.base_models.register(record, principal)
    stored = await svc.base_models.get(record.id)
    return (stored or record).model_dump(mode="json")


@router.delete("/base-models/{model_id:path}", tags=["base models"], status_code=204)
async def remove_base_model(
    model_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.base_models.remove(model_id, principal)
    return Response(status_code=204)


# ---- connections (admin only)


@router.post("/connections", tags=["connections"], status_code=201, summary="Add an Ollama or OpenAI-compatible server")
async def add_connection(
    body: ConnectionIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    connection = await svc.base_models.add_connection(
        type_=body.type, name=body.name or body.url, url=body.url, api_key=body.api_key
    )
    return connection.model_dump(mode="json")


@router.get("/connections", tags=["connections"], summary="Connections (API keys are never shown)")
async def list_connections(principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return {"items": [c.model_dump(mode="json") for c in await svc.base_models.connections()]}


@router.post("/connections/{connection_id}/sync", tags=["connections"], summary="List the connection's models now")
async def sync_connection(
    connection_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return await svc.base_models.sync_connection(connection_id)


@router.get(
    "/connections/{connection_id}/credentials",
    tags=["connections"],
    summary="URL and API key, for services that call the connection (admin tokens only)",
)
async def connection_credentials(
    connection_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return await svc.base_models.connection_credentials(connection_id)


@router.delete("/connections/{connection_id}", tags=["connections"], status_code=204)
async def delete_connection(
    connection_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.base_models.delete_connection(connection_id, principal)
    return Response(status_code=204)


# ---- users, groups, tokens (admin only)


@router.post(
    "/users",
    tags=["users"],
    status_code=201,
    responses=links_to(201, "user_id", {"DeleteUser": ("DELETE", "/api/v1/users/{user_id}")}),
)
async def add_user(
    body: UserIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    user = await svc.directory.add_user(id=body.id, name=body.name, email=body.email, role=body.role)
    return user.model_dump(mode="json")


@router.get("/users", tags=["users"])
async def list_users(principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return {"items": [u.model_dump(mode="json") for u in await svc.directory.users()]}


@router.delete("/users/{user_id}", tags=["users"], status_code=204)
async def delete_user(user_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]) -> Response:
    await svc.directory.delete_user(user_id)
    return Response(status_code=204)


@router.post(
    "/groups",
    tags=["groups"],
    status_code=201,
    responses=links_to(
        201,
        "group_id",
        {
            "DeleteGroup": ("DELETE", "/api/v1/groups/{group_id}"),
            "AddMember": ("PUT", "/api/v1/groups/{group_id}/members/{user_id}"),
        },
    ),
)
async def add_group(
    body: GroupIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return (await svc.directory.add_group(id=body.id, name=body.name)).model_dump(mode="json")


@router.get("/groups", tags=["groups"])
async def list_groups(principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return {"items": [g.model_dump(mode="json") for g in await svc.directory.groups()]}


@router.delete("/groups/{group_id}", tags=["groups"], status_code=204)
async def delete_group(
    group_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.directory.delete_group(group_id)
    return Response(status_code=204)


@router.put("/groups/{group_id}/members/{user_id}", tags=["groups"], status_code=204)
async def add_member(
    group_id: str, user_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.directory.add_member(group_id, user_id)
    return Response(status_code=204)


@router.delete("/groups/{group_id}/members/{user_id}", tags=["groups"], status_code=204)
async def remove_member(
    group_id: str, user_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.directory.remove_member(group_id, user_id)
    return Response(status_code=204)


@router.post("/tokens", tags=["tokens"], status_code=201, summary="Issue a bearer token for a user")
async def issue_token(
    body: TokenIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    token, expires = await svc.directory.issue(body.user_id, body.ttl_seconds)
    return {"token": token, "token_type": "bearer", "expires_at": expires.isoformat()}
