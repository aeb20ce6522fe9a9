"""What every FastAPI service shares: bearer auth, error translation, health routes.

Errors from the service layer become ``{"error": {"code": ..., "message": ...}}`` with a status code chosen
here, in the entrypoint, and nowhere else.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelhub_common.auth import Principal, VerifiedTokens, parse_authorization_header, verify_token
from modelhub_common.errors import (
    AuthError,
    ConfigurationError,
    DependencyError,
    ModelhubError,
    PermissionDeniedError,
)
from modelhub_common.health import Readiness, health_router
from modelhub_common.settings import ServiceSettings

logger = logging.getLogger(__name__)

# Subclasses in services map to their own statuses by setting ``http_status``.
_DEFAULT_STATUS: list[tuple[type[ModelhubError], int]] = [
    (AuthError, 401),
    (PermissionDeniedError, 403),
    (DependencyError, 503),
    (ConfigurationError, 500),
]


def error_status(exc: ModelhubError) -> int:
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return status
    for kind, code in _DEFAULT_STATUS:
        if isinstance(exc, kind):
            return code
    return 500


def error_body(code: str, message: str, details: object = None) -> dict[str, object]:
    """The one error shape of every API: ``{"error": {"code", "message", "details"}}``."""
    body: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


async def _modelhub_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelhubError)
    status = error_status(exc)
    if status >= 500:
        logger.error("request failed", extra={"path": request.url.path, "code": exc.code, "error": exc.message})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = error_body(exc.code, exc.message, getattr(exc, "details", None))
    return JSONResponse(body, status_code=status, headers=headers)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
    return JSONResponse(error_body("invalid_request", summary, problems), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelhubError, _modelhub_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)


_bearer = HTTPBearer(auto_error=False, description="A modelhub JWT: `Authorization: Bearer <token>`")


def principal_dependency(secret: Callable[[], str], issuer: str = "modelhub") -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency that verifies the bearer token and yields the caller."""

    async def current_principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        return verify_token(parse_authorization_header(header), secret(), issuer=issuer)

    return current_principal


async def request_principal(request: Request) -> Principal:
    """The FastAPI dependency every service uses: verifies the bearer token against the settings the app
    was built with (``app.state.settings``, a :class:`ServiceSettings`)."""
    token = parse_authorization_header(request.headers.get("authorization"))
    tokens: VerifiedTokens | None = getattr(request.app.state, "verified_tokens", None)
    if tokens is None:  # one per app, made on first use: the settings are set after the app is built
        settings: ServiceSettings = request.app.state.settings
        tokens = request.app.state.verified_tokens = VerifiedTokens(
            settings.jwt_secret.get_secret_value, settings.jwt_issuer
        )
    return tokens.verify(token)


async def admin_principal(principal: Annotated[Principal, Depends(request_principal)]) -> Principal:
    """Like :func:`request_principal`, for admin-only routes: 403 for anyone else."""
    principal.require_admin()
    return principal


#: Route parameters: the verified caller, or the verified caller who must be an admin.
CurrentPrincipal = Annotated[Principal, Depends(request_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


def create_app(
    *,
    title: str,
    version: str,
    readiness: Readiness,
    description: str = "",
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with health routes and error handlers; services add their routers under ``/api/v1``."""
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan)
    app.state.readiness = readiness
    install_error_handlers(app)
    app.include_router(health_router(readiness))
    return app


async def serve_http(app: FastAPI, *, host: str, port: int, grace_seconds: float) -> None:
    """Runs the app until SIGTERM/SIGINT; in-flight requests get ``grace_seconds`` to finish."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(grace_seconds)),
    )
    server = uvicorn.Server(config)
    # Everything imported so far lives as long as the process: moving it out of the collector's reach keeps
    # full collections short (they were 55-75 ms pauses in the registry benchmark's list p99).
    gc.collect()
    gc.freeze()
    await server.serve()
    if not server.started:
        raise DependencyError("the HTTP server did not start; the log above says why")
