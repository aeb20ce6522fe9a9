"""What every page shares: the wired console (``app.state.console``), the signed-in session, CSRF checks,
flash messages and the translation of errors into pages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from modelhub_console.adapters.gateway_client import GatewayClient
from modelhub_console.adapters.puller_client import PullerClient
from modelhub_console.adapters.rag_client import RagClient
from modelhub_console.adapters.registry_client import RegistryClient
from modelhub_console.adapters.stored_images import StoredImages
from modelhub_console.errors import BackendError, BackendUnavailableError, CsrfError, SignInRequiredError
from modelhub_console.sessions import COOKIE, Session, SessionStore
from modelhub_console.settings import ConsoleSettings

logger = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parent.parent
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Console:
    settings: ConsoleSettings
    sessions: SessionStore
    registry: RegistryClient
    gateway: GatewayClient
    puller: PullerClient | None
    rag: RagClient | None
    templates: Jinja2Templates
    # session id -> messages shown once on the next page
    flashes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # session id -> an uploaded import file waiting for "apply" after its dry run
    pending_imports: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    images: StoredImages | None = None

    def flash(self, session: Session, kind: str, text: str) -> None:
        self.flashes.setdefault(session.id, []).append((kind, text))

    def take_flashes(self, session: Session | None) -> list[tuple[str, str]]:
        return self.flashes.pop(session.id, []) if session else []

    def page(
        self, request: Request, name: str, session: Session | None, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "session": session,
                "flashes": self.take_flashes(session),
                "csrf_field": CSRF_FIELD,
                "knowledge": self.rag is not None,
                **context,
            },
            status_code=status_code,
        )


def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))


def console(request: Request) -> Console:
    wired: Console = request.app.state.console
    return wired


ConsoleDep = Annotated[Console, Depends(console)]


def optional_session(request: Request, app: ConsoleDep) -> Session | None:
    return app.sessions.get(request.cookies.get(COOKIE))


def current_session(request: Request, app: ConsoleDep) -> Session:
    session = app.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequiredError("sign in to continue")
    return session


async def checked_session(request: Request, app: ConsoleDep) -> Session:
    """The session of a state-changing request, whose CSRF token (form field or header) must match."""
    session = current_session(request, app)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not session.csrf_matches(sent):
        raise CsrfError("the form's security token is missing or out of date; reload the page and try again")
    return session


SessionDep = Annotated[Session, Depends(current_session)]
CheckedSessionDep = Annotated[Session, Depends(checked_session)]
OptionalSessionDep = Annotated[Session | None, Depends(optional_session)]


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.headers.get(CSRF_HEADER) is not None


async def sign_in_required(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": {"code": "sign_in_required", "message": str(exc)}}, status_code=401)
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/signin"})
    return RedirectResponse("/signin", status_code=303)


async def csrf_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfError)
    logger.warning("request refused: CSRF token missing or wrong", extra={"path": request.url.path})
    if _wants_json(request):
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=403)
    app = console(request)
    return app.page(request, "error.html", optional_session(request, app), status_code=403, message=exc.message)


async def backend_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError | BackendUnavailableError)
    status = exc.status if isinstance(exc, BackendError) else 503
    if _wants_json(request):
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status)
    app = console(request)
    return app.page(request, "error.html", optional_session(request, app), status_code=status, message=exc.message)
