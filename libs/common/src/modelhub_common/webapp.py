"""What every FastAPI service shares: bearer auth, error translation, health routes.

Errors from the service layer become ``{"error": {"code": ..., "message": ...}}`` with a status code chosen
here, in the entrypoint, and nowhere else.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.telemetry import TelemetryConfig
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelhub_common import tracing
from modelhub_common.auth import Principal, VerifiedTokens, parse_authorization_header, verify_token
from modelhub_common.errors import (
    AuthError,
    ConfigurationError,
    DependencyError,
    ModelhubError,
    PermissionDeniedError,
    error_body,
)
from modelhub_common.health import Readiness, health_router
from modelhub_common.metrics import HttpMetricsMiddleware, ServiceMetrics, metrics_router
from modelhub_common.openapi_errors import document_errors
from modelhub_common.request_boundary import RequestBoundary, openai_refusal
from modelhub_common.request_ids import RequestIdMiddleware
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


#: What a client is told to wait before trying again while a dependency is down.
RETRY_AFTER_SECONDS = 5


async def _modelhub_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelhubError)
    status = error_status(exc)
    if status >= 500:
        logger.error("request failed", extra={"path": request.url.path, "code": exc.code, "error": exc.message})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    body = error_body(exc.code, exc.message, getattr(exc, "details", None))
    return JSONResponse(body, status_code=status, headers=headers)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
    body = error_body("invalid_request", summary, problems)
    if request.url.path.startswith(getattr(request.app.state, "openai_prefixes", ())):
        body = openai_refusal(body)
    return JSONResponse(body, status_code=422)


_HTTP_CODES = {400: "invalid_body", 401: "unauthenticated", 404: "not_found", 405: "method_not_allowed"}


_DOCUMENTED_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


@functools.lru_cache(maxsize=1024)
def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))


def _allowed_methods(request: Request) -> str:
    """The methods the app's OpenAPI document gives the most literal path that matches: Starlette's 405 names
    only the first route whose path matched, though ``GET`` and ``POST`` on one path are two routes, and
    a ``{model_id:path}`` route also matches ``/models/export``, which is a resource of its own."""
    best: tuple[tuple[int, int], dict[str, Any]] | None = None
    for path, item in request.app.openapi().get("paths", {}).items():
        if _template(path).fullmatch(request.url.path):
            specificity = (path.count("{"), -len(path))
            if best is None or specificity < best[0]:
                best = (specificity, item)
    if best is None:
        return ""
    return ", ".join(sorted(method.upper() for method in best[1] if method in _DOCUMENTED_METHODS))


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The framework's own errors (unknown route, wrong method, unparsable body) in the shared shape; a 405
    keeps its ``Allow`` header."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"there is no {request.url.path}; see /docs for the routes"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
        if allowed:
            headers = {**(exc.headers or {}), "Allow": allowed}
            return JSONResponse(error_body(code, message), status_code=405, headers=headers)
    elif exc.status_code == 400 and "parsing the body" in message:
        message = "the request body cannot be parsed as JSON (or is nested too deeply)"
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
    return JSONResponse(
        error_body("dependency_unavailable", "the database is unavailable; try again in a few seconds"),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request crashed", extra={"path": request.url.path})
    return JSONResponse(
        error_body("internal", "the service failed while handling this request; it was logged, try again"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelhubError, _modelhub_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    # While PostgreSQL is unreachable a request fails fast with a 503 the client can retry, never a bare 500.
    app.add_exception_handler(OperationalError, _database_unavailable_handler)
    app.add_exception_handler(PoolTimeout, _database_unavailable_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)


_bearer = HTTPBearer(auto_error=False, description="A modelhub JWT: `Authorization: Bearer <token>`")


def principal_dependency(secret: Callable[[], str], issuer: str = "modelhub") -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency that verifies the bearer token and yields the caller."""

    async def current_principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        return verify_token(parse_authorization_header(header), secret(), issuer=issuer)

    return current_principal


#: Where :func:`request_principal` leaves the verified caller in the ASGI scope, for middleware that runs
#: after the route (an audit trail).
PRINCIPAL_SCOPE_KEY = "modelhub.principal"


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
    principal = tokens.verify(token)
    request.scope[PRINCIPAL_SCOPE_KEY] = principal
    return principal


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
    service: str | None = None,
    openai_prefixes: tuple[str, ...] = (),
) -> FastAPI:
    """A FastAPI app with health routes, ``/metrics`` and error handlers; services add their routers under
    ``/api/v1``. ``service`` names it in metrics (default: the title without ``modelhub ``); its
    :class:`ServiceMetrics` is ``app.state.metrics``. ``openai_prefixes``: paths of an OpenAI-compatible
    API, whose bad input (the boundary's refusals, and 422s of a body off its model) is refused in OpenAI's
    error shape."""
    # FastAPI's own telemetry is off: once a tracer provider is set it adds a server span of its own and spans
    # around dependencies, endpoint and serialization on every request (tripling tracing's cost per GET), while
    # the service has its server span (tracing.ServerSpanMiddleware), metrics and logs already.
    telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan, telemetry=telemetry)
    app.state.readiness = readiness
    app.state.openai_prefixes = openai_prefixes
    metrics = app.state.metrics = ServiceMetrics(service or _service_name(title))
    install_error_handlers(app)
    document_errors(app)
    app.add_middleware(RequestBoundary, openai_prefixes=openai_prefixes)
    # Added last, so outermost: it also counts what the boundary refuses and what the error handlers answer,
    # and every log line of the request, error handlers' included, carries its id.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health_router(readiness))
    app.include_router(metrics_router(metrics))
    tracing.instrument_app(app)
    return app


def _service_name(title: str) -> str:
    return title.removeprefix("modelhub ").strip().replace(" ", "-") or "service"


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
