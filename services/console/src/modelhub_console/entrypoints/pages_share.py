"""Share: who may read or change a model file (the registry) or a knowledge collection (the rag service).
The page shows the owner, public or private and the grants, and changes them one step at a time; a refusal
of the service (not allowed, changed by someone else meanwhile, a bad grant) is shown on the page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from modelhub_console.entrypoints.web import CheckedSessionDep, Console, ConsoleDep, SessionDep
from modelhub_console.errors import BackendError
from modelhub_console.sessions import Session
from modelhub_console.sharing import PERMISSIONS, PRINCIPAL_TYPES, Access, Grant, check_grant

router = APIRouter()
Kind = Literal["model", "knowledge"]


@dataclass(frozen=True)
class Shared:
    """What the page shows of a model file or a collection."""

    kind: Kind
    id: str
    name: str
    owner: str
    version: int | None
    access: Access

    @property
    def page_url(self) -> str:
        return share_url(self.kind, self.id)

    @property
    def back_url(self) -> str:
        if self.kind == "model":
            return "/models/details?" + urlencode({"id": self.id})
        return "/knowledge/collection?" + urlencode({"id": self.id})


def share_url(kind: Kind, item_id: str) -> str:
    return ("/models/share?" if kind == "model" else "/knowledge/share?") + urlencode({"id": item_id})


def _version(body: dict[str, Any]) -> int | None:
    value = body.get("version")
    return int(value) if isinstance(value, int) else None


async def _load(app: Console, session: Session, kind: Kind, item_id: str) -> Shared:
    if kind == "model":
        body = await app.registry.get_model(session.token, item_id)
        access = body.get("access") or {}  # a model file keeps its sharing under "access"
    else:
        if app.rag is None:
            raise BackendError(404, "knowledge_not_configured", "knowledge is not configured for this console")
        body = access = await app.rag.get_collection(session.token, item_id)  # a collection, at the top level
    return Shared(
        kind,
        str(body["id"]),
        str(body.get("name") or body["id"]),
        str(body.get("owner_id", "")),
        _version(body),
        Access.from_json(access.get("public_read"), access.get("grants")),
    )


async def _save(app: Console, session: Session, shared: Shared, access: Access, version: int | None) -> None:
    if shared.kind == "model":
        await app.registry.set_access(
            session.token,
            shared.id,
            {"public_read": access.public_read, "grants": access.grants_json()},
            version=version,
        )
    else:
        assert app.rag is not None  # _load checked it
        await app.rag.set_access(
            session.token, shared.id, public_read=access.public_read, grants=access.grants_json(), version=version
        )


async def _page(request: Request, app: Console, session: Session, kind: Kind, item_id: str) -> Response:
    shared = await _load(app, session, kind, item_id)
    users, groups = await app.registry.directory(session.token)
    return app.page(
        request,
        "share.html",
        session,
        shared=shared,
        principal_types=PRINCIPAL_TYPES,
        permissions=PERMISSIONS,
        users=users,
        groups=groups,
    )


async def _change(
    app: Console,
    session: Session,
    kind: Kind,
    item_id: str,
    *,
    op: str,
    version: int | None,
    principal_type: str,
    principal_id: str,
    permission: str,
) -> Response:
    shared = await _load(app, session, kind, item_id)
    principal_id = principal_id.strip()
    problem: str | None = None
    done = ""
    access = shared.access
    if op == "public":
        access, done = access.with_public_read(True), "Every signed-in user can now read it."
    elif op == "private":
        access, done = access.with_public_read(False), "It is private again: only its owner, admins and the grants."
    elif op == "add":
        problem = check_grant(principal_type, principal_id, permission)
        access = access.with_grant(Grant(principal_type, principal_id, permission))
        may = "read and change" if permission == "write" else "read"
        done = f"{principal_type.title()} {principal_id} can now {may} it."
    elif op == "remove":
        access, done = access.without(principal_type, principal_id), f"Removed the grant of {principal_id}."
    else:
        problem = f"unknown change {op!r}"
    if problem:
        app.flash(session, "error", f"Not shared: {problem}.")
    else:
        try:
            await _save(app, session, shared, access, version)
        except BackendError as exc:
            if exc.status == 404:
                raise
            fields = exc.field_errors()
            detail = "; ".join(f"{f}: {m}" for f, m in fields.items()) if fields else exc.message
            app.flash(
                session, "error", f"The {'registry' if kind == 'model' else 'knowledge service'} refused: {detail}"
            )
        else:
            app.flash(session, "ok", done)
    return RedirectResponse(shared.page_url, status_code=303)


@router.get("/models/share", summary="Who may read or change a model file")
async def model_share(
    request: Request, app: ConsoleDep, session: SessionDep, id: Annotated[str, Query(max_length=256)]
) -> Response:
    return await _page(request, app, session, "model", id)


@router.get("/knowledge/share", summary="Who may read or change a knowledge collection")
async def knowledge_share(
    request: Request, app: ConsoleDep, session: SessionDep, id: Annotated[str, Query(max_length=200)]
) -> Response:
    return await _page(request, app, session, "knowledge", id)


def _share_form(kind: Kind) -> Any:
    async def change(
        app: ConsoleDep,
        session: CheckedSessionDep,
        id: Annotated[str, Form(max_length=256)],
        op: Annotated[str, Form(max_length=20)],
        version: Annotated[int | None, Form(ge=1)] = None,
        principal_type: Annotated[str, Form(max_length=20)] = "",
        principal_id: Annotated[str, Form(max_length=256)] = "",
        permission: Annotated[str, Form(max_length=20)] = "",
    ) -> Response:
        return await _change(
            app,
            session,
            kind,
            id,
            op=op,
            version=version,
            principal_type=principal_type,
            principal_id=principal_id,
            permission=permission,
        )

    return change


router.add_api_route(
    "/models/share",
    _share_form("model"),
    methods=["POST"],
    summary="Make a model file public or private, or add or remove a grant",
)
router.add_api_route(
    "/knowledge/share",
    _share_form("knowledge"),
    methods=["POST"],
    summary="Make a collection public or private, or add or remove a grant",
)
