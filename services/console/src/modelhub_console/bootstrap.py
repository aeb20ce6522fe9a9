"""Wires the console: the one place its HTTP client, gRPC channel and session store are built."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from modelhub_common.health import Readiness
from modelhub_common.webapp import create_app, serve_http
from modelhub_console import __version__
from modelhub_console.adapters.gateway_client import GatewayClient
from modelhub_console.adapters.puller_client import PullerClient
from modelhub_console.adapters.rag_client import RagClient
from modelhub_console.adapters.registry_client import RegistryClient
from modelhub_console.adapters.stored_images import StoredImages
from modelhub_console.entrypoints import pages_auth, pages_chat, pages_knowledge, pages_models, pages_share, web
from modelhub_console.errors import BackendError, BackendUnavailableError, CsrfError, SignInRequiredError
from modelhub_console.sessions import SessionStore
from modelhub_console.settings import ConsoleSettings

SERVICE = "console"
logger = logging.getLogger(__name__)


def build_app(settings: ConsoleSettings) -> FastAPI:
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=settings.request_timeout_seconds, follow_redirects=False) as http:
            channel = grpc.aio.insecure_channel(settings.gateway_grpc)
            try:
                app.state.console = web.Console(
                    settings=settings,
                    sessions=SessionStore(settings.session_ttl_seconds, settings.max_sessions),
                    registry=RegistryClient(http, settings.registry_url),
                    gateway=GatewayClient(channel),
                    puller=PullerClient(http, settings.puller_url) if settings.puller_url else None,
                    rag=RagClient(http, settings.rag_url) if settings.rag_url else None,
                    templates=web.templates(),
                    images=StoredImages(http, max_bytes=settings.max_image_bytes),
                )

                async def registry_reachable() -> None:
                    (await http.get(settings.registry_url.rstrip("/") + "/healthz")).raise_for_status()

                readiness.add("registry", registry_reachable)
                readiness.started = True
                logger.info("console started", extra={"port": settings.port})
                yield
            finally:
                readiness.stopping = True
                await channel.close()

    app = create_app(
        title="modelhub console",
        version=__version__,
        description="The web console: server-rendered pages calling the other services with the user's token.",
        readiness=readiness,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=str(web.PACKAGE_DIR / "static")), name="static")
    app.include_router(pages_auth.router)
    app.include_router(pages_models.router)
    app.include_router(pages_chat.router)
    app.include_router(pages_knowledge.router)
    app.include_router(pages_share.router)
    app.add_exception_handler(SignInRequiredError, web.sign_in_required)
    app.add_exception_handler(CsrfError, web.csrf_refused)
    app.add_exception_handler(BackendError, web.backend_failed)
    app.add_exception_handler(BackendUnavailableError, web.backend_failed)

    @app.middleware("http")
    async def security_headers(request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self'; script-src 'self';"
            " frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app


async def serve(settings: ConsoleSettings) -> None:
    await serve_http(
        build_app(settings), host=settings.host, port=settings.port, grace_seconds=settings.shutdown_grace_seconds
    )
