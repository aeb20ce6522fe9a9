"""Sign-in (a pasted token, or a username and password checked by the registry) and sign-out."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from modelhub_console.entrypoints.web import CheckedSessionDep, ConsoleDep, OptionalSessionDep
from modelhub_console.errors import BackendError, BackendUnavailableError, CsrfError
from modelhub_console.sessions import COOKIE

router = APIRouter()
# Before there is a session, the sign-in form's CSRF token is a double-submit cookie.
SIGNIN_CSRF_COOKIE = "modelhub_signin_csrf"


@router.get("/", include_in_schema=False)
async def home(session: OptionalSessionDep) -> Response:
    return RedirectResponse("/models" if session else "/signin", status_code=303)


@router.get("/signin", summary="The sign-in page")
async def signin_page(request: Request, app: ConsoleDep, session: OptionalSessionDep) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = app.page(request, "signin.html", None, signin_csrf=csrf, error=None)
    response.set_cookie(
        SIGNIN_CSRF_COOKIE, csrf, httponly=True, samesite="lax", secure=app.settings.prod, path="/signin"
    )
    return response


@router.post("/signin", summary="Sign in with a token or a username and password")
async def signin(
    request: Request,
    app: ConsoleDep,
    csrf_token: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        raise CsrfError("the sign-in form's security token is missing or out of date; reload the page")
    error = None
    bearer = token.strip()
    try:
        if username.strip():
            bearer = await app.registry.login(username.strip(), password)
        elif not bearer:
            error = "paste a token, or give a username and password"
        elif not await app.registry.check_token(bearer):
            error = "the registry does not accept this token"
    except BackendError as exc:
        error = exc.message
    except BackendUnavailableError as exc:
        error = exc.message
    if error is not None:
        csrf = secrets.token_urlsafe(32)
        response = app.page(request, "signin.html", None, status_code=401, signin_csrf=csrf, error=error)
        response.set_cookie(
            SIGNIN_CSRF_COOKIE, csrf, httponly=True, samesite="lax", secure=app.settings.prod, path="/signin"
        )
        return response
    session = app.sessions.create(bearer)
    redirect = RedirectResponse("/models", status_code=303)
    redirect.set_cookie(
        COOKIE,
        session.id,
        max_age=max(1, int(session.expires_at - time.time())),
        httponly=True,
        samesite="lax",
        secure=app.settings.prod,
        path="/",
    )
    redirect.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")
    return redirect


@router.post("/signout", summary="Sign out")
async def signout(app: ConsoleDep, session: CheckedSessionDep) -> Response:
    app.sessions.delete(session.id)
    app.flashes.pop(session.id, None)
    app.pending_imports.pop(session.id, None)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
