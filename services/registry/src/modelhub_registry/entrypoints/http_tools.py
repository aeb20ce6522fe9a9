"""REST routes for tool servers: ``/api/v1/tool-servers`` (admins) and ``/api/v1/tools`` (any user).

Discovery with ``auth: forward`` sends the calling admin's own token (a timer refresh sends none).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from modelhub_common.auth import parse_authorization_header
from modelhub_common.webapp import AdminPrincipal, CurrentPrincipal
from modelhub_registry.domain.tool_server import AccessControl
from modelhub_registry.entrypoints.deps import Services, services
from modelhub_registry.errors import RegistryError
from modelhub_registry.service_layer.tool_servers import ToolServerService

router = APIRouter(prefix="/api/v1")


class ToolServerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="slug: a-z, 0-9, '.', '_', '-'")
    name: str | None = Field(None, max_length=256, description="shown to users; defaults to the id")
    description: str = Field("", max_length=4000)
    kind: Literal["mcp", "openapi"]
    url: str = Field(min_length=1, max_length=2048, description="MCP endpoint, or the OpenAPI document URL")
    base_url: str | None = Field(None, max_length=2048, description="OpenAPI: where operations are called")
    auth: Literal["none", "bearer", "forward"] = "none"
    secret: str | None = Field(None, max_length=8192, description="bearer secret (auth 'bearer')")
    timeout_seconds: float = 10.0
    max_result_bytes: int = 65536
    access_control: AccessControl | None = Field(None, description="null: every user may use it")


def _tool_servers(svc: Services) -> ToolServerService:
    if svc.tool_servers is None:
        raise RegistryError("tool servers are not wired in this registry", code="not_configured")
    return svc.tool_servers


def _caller_token(request: Request) -> str:
    return parse_authorization_header(request.headers.get("authorization"))


def _list_row(server: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": server["id"],
        "name": server["name"],
        "kind": server["kind"],
        "url": server["url"],
        "auth": server["auth"],
        "tools": len(server["tools"]),
        "refreshed_at": server["refreshed_at"],
        "error": server["last_error"],
        "version": server["version"],
    }


@router.post("/tool-servers", tags=["tool servers"], status_code=201, summary="Register an MCP or OpenAPI server")
async def create_tool_server(
    body: ToolServerIn, request: Request, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    data = body.model_dump()
    data["name"] = body.name or body.id
    server = await _tool_servers(svc).create(data, principal, caller_token=_caller_token(request))
    return server.admin_json()


@router.get("/tool-servers", tags=["tool servers"], summary="Tool servers, one row each (secrets never shown)")
async def list_tool_servers(principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return {"items": [_list_row(server.admin_json()) for server in await _tool_servers(svc).list_all()]}


@router.get("/tool-servers/{server_id}", tags=["tool servers"], summary="One tool server with its tools")
async def get_tool_server(
    server_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return (await _tool_servers(svc).get(server_id)).admin_json()


@router.patch(
    "/tool-servers/{server_id}",
    tags=["tool servers"],
    summary="Change a tool server (the given fields; null clears base_url, secret, access_control)",
)
async def update_tool_server(
    server_id: str,
    request: Request,
    principal: AdminPrincipal,
    svc: Annotated[Services, Depends(services)],
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    server = await _tool_servers(svc).update(server_id, body, principal, caller_token=_caller_token(request))
    return server.admin_json()


@router.delete("/tool-servers/{server_id}", tags=["tool servers"], status_code=204)
async def delete_tool_server(
    server_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await _tool_servers(svc).delete(server_id, principal)
    return Response(status_code=204)


@router.post("/tool-servers/{server_id}/refresh", tags=["tool servers"], summary="List the server's tools now")
async def refresh_tool_server(
    server_id: str, request: Request, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    server = await _tool_servers(svc).refresh(server_id, principal, caller_token=_caller_token(request))
    return server.admin_json()


@router.get(
    "/tool-servers/{server_id}/credentials",
    tags=["tool servers"],
    summary="URL, auth and secret, for services that call the tools (admin tokens only)",
)
async def tool_server_credentials(
    server_id: str, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return await _tool_servers(svc).credentials(server_id)


@router.get("/tools", tags=["tool servers"], summary="The tool servers the caller may use, with their tools")
async def list_tools(principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return {"items": [server.usable_json() for server in await _tool_servers(svc).usable(principal)]}


@router.get("/tools/{server_id}", tags=["tool servers"], summary="One tool server the caller may use")
async def get_tools(
    server_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return (await _tool_servers(svc).usable_one(server_id, principal)).usable_json()
