"""REST routes for password sign-in (anyone) and setting a user's password (admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from modelhub_common.webapp import AdminPrincipal
from modelhub_registry.entrypoints.deps import Services, services
from modelhub_registry.errors import RegistryError
from modelhub_registry.service_layer.passwords import PasswordService

router = APIRouter(prefix="/api/v1")


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class PasswordIn(BaseModel):
    # The documented minimum is the setting's default (MODELHUB_REGISTRY_MIN_PASSWORD_LENGTH); the route
    # checks the configured one.
    password: str = Field(min_length=1, max_length=1024, json_schema_extra={"minLength": 12})


def _passwords(svc: Services) -> PasswordService:
    if svc.passwords is None:
        raise RegistryError("password sign-in is not configured", code="not_configured")
    return svc.passwords


@router.post(
    "/auth/login",
    tags=["auth"],
    summary="Sign in with a username and password; returns a bearer token (no token needed)",
    responses={401: {"description": "wrong username or password"}, 429: {"description": "rate limit or lock-out"}},
)
async def login(body: LoginIn, request: Request, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    address = request.client.host if request.client else ""
    token, expires = await _passwords(svc).login(body.username, body.password, source_address=address)
    return {"token": token, "token_type": "bearer", "expires_at": expires.isoformat(), "user_id": body.username}


@router.put("/users/{user_id}/password", tags=["users"], status_code=204, summary="Set a user's password")
async def set_password(
    user_id: str, body: PasswordIn, principal: AdminPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await _passwords(svc).set_password(user_id, body.password)
    return Response(status_code=204)
