"""The Models workspace: the grid (search, tag, show hidden, pages), the editor, clone / hide / delete, avatars,
export and import."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from modelhub_console.entrypoints.web import CheckedSessionDep, Console, ConsoleDep, SessionDep
from modelhub_console.errors import BackendError
from modelhub_console.model_form import ModelForm
from modelhub_console.sessions import Session

router = APIRouter()
ACTIONS = {"clone", "hide", "unhide", "enable", "disable", "delete"}
AVATAR_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}


def card(model: dict[str, Any]) -> dict[str, Any]:
    """What a card shows; an avatar stored in the registry is fetched through the console (it needs the token)."""
    meta = model.get("meta") or {}
    avatar = meta.get("profile_image_url") or ""
    if avatar.startswith("/api/v1/models/"):
        avatar = "/avatar?" + _query(id=model["id"], v=model.get("version", ""))
    elif not avatar.startswith(("data:image/", "https://")):
        avatar = ""
    return {
        "id": model["id"],
        "name": model.get("name") or model["id"],
        "description": meta.get("description") or "",
        "tags": meta.get("tags") or [],
        "base": model.get("base_model_id") or "",
        "hidden": bool(model.get("hidden")),
        "enabled": model.get("enabled", True),
        "owner": model.get("owner_id", ""),
        "avatar": avatar,
        "initial": (model.get("name") or model["id"])[:1].upper(),
    }


def _query(**values: Any) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in values.items() if v not in (None, "", False)})


@router.get("/models", summary="The Models workspace")
async def workspace(
    request: Request,
    app: ConsoleDep,
    session: SessionDep,
    q: Annotated[str, Query(max_length=200)] = "",
    tag: Annotated[str, Query(max_length=64)] = "",
    show_hidden: bool = False,
    cursor: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    page = await app.registry.list_models(
        session.token,
        q=q or None,
        tag=tag or None,
        include_hidden=show_hidden,
        # Disabled models stay in the workspace behind the same switch (they only leave the chat picker).
        include_disabled=show_hidden,
        limit=app.settings.page_size,
        cursor=cursor or None,
    )
    cards = [card(m) for m in page.get("items", [])]
    tags = sorted({t for c in cards for t in c["tags"]} | ({tag} if tag else set()))
    next_cursor = page.get("next_cursor")
    context: dict[str, Any] = {
        "cards": cards,
        "q": q,
        "tag": tag,
        "tags": tags,
        "show_hidden": show_hidden,
        "first_page": not cursor,
        "first_url": "/models?" + _query(q=q, tag=tag, show_hidden=show_hidden),
        "next_url": "/models?" + _query(q=q, tag=tag, show_hidden=show_hidden, cursor=next_cursor)
        if next_cursor
        else None,
    }
    # htmx asks for the grid only (search as you type, filters, pages); a plain request gets the whole page.
    name = "_grid.html" if request.headers.get("hx-request") and request.headers.get("hx-target") == "grid" else None
    return app.page(request, name or "models.html", session, **context)


async def _base_choices(app: Console, session: Session) -> list[str]:
    bases = [str(b["id"]) for b in await app.registry.base_models(session.token)]
    page = await app.registry.list_models(session.token, include_hidden=True, include_disabled=True, limit=200)
    return bases + [str(m["id"]) for m in page.get("items", [])]


async def _editor(
    request: Request,
    app: Console,
    session: Session,
    form: ModelForm,
    *,
    editing: bool,
    status: int = 200,
    problems: list[str] | None = None,
) -> Response:
    return app.page(
        request,
        "model_form.html",
        session,
        status_code=status,
        form=form,
        editing=editing,
        bases=await _base_choices(app, session),
        problems=problems or [],
    )


@router.get("/models/new", summary="The editor for a new model file")
async def new_model(request: Request, app: ConsoleDep, session: SessionDep) -> Response:
    return await _editor(request, app, session, ModelForm(), editing=False)


@router.get("/models/edit", summary="The editor for a model file")
async def edit_model(request: Request, app: ConsoleDep, session: SessionDep, id: str) -> Response:
    model = await app.registry.get_model(session.token, id)
    return await _editor(request, app, session, ModelForm.from_model(model), editing=True)


def _form(
    id: str,
    name: str,
    base_model_id: str,
    description: str,
    system: str,
    temperature: str,
    top_p: str,
    max_tokens: str,
    tags: str,
    suggestions: str,
    vision: str,
) -> ModelForm:
    return ModelForm(
        id=id,
        name=name,
        base_model_id=base_model_id,
        description=description,
        system=system,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        tags=tags,
        suggestions=suggestions,
        vision=bool(vision),
    )


async def _upload_avatar(app: Console, session: Session, model_id: str, avatar: UploadFile | None) -> str | None:
    """Stores an uploaded avatar; returns what went wrong, if anything."""
    if avatar is None or not avatar.filename:
        return None
    data = await avatar.read(5_000_001)
    if not data:
        return None
    content_type = avatar.content_type or ""
    if content_type not in AVATAR_TYPES:
        return "avatar: use a PNG, JPEG, WebP or GIF image"
    try:
        await app.registry.put_avatar(session.token, model_id, data, content_type)
    except BackendError as exc:
        return f"avatar: {exc.message}"
    return None


@router.post("/models/save", summary="Create or change a model file")
async def save_model(
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    editing: Annotated[str, Form()] = "",
    id: Annotated[str, Form(max_length=256)] = "",
    name: Annotated[str, Form(max_length=1000)] = "",
    base_model_id: Annotated[str, Form(max_length=600)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
    system: Annotated[str, Form(max_length=200_000)] = "",
    temperature: Annotated[str, Form(max_length=50)] = "",
    top_p: Annotated[str, Form(max_length=50)] = "",
    max_tokens: Annotated[str, Form(max_length=50)] = "",
    tags: Annotated[str, Form(max_length=5_000)] = "",
    suggestions: Annotated[str, Form(max_length=50_000)] = "",
    vision: Annotated[str, Form()] = "",
    avatar: UploadFile | None = None,
) -> Response:
    form = _form(
        id, name, base_model_id, description, system, temperature, top_p, max_tokens, tags, suggestions, vision
    )
    is_edit = editing == "1"
    try:
        if is_edit:
            saved = await app.registry.update_model(session.token, form.id, form.patch_body())
        else:
            saved = await app.registry.create_model(session.token, form.create_body())
    except BackendError as exc:
        if exc.status not in (400, 409, 413, 422):
            raise
        problems = form.set_errors(exc.field_errors(), exc.message)
        return await _editor(request, app, session, form, editing=is_edit, status=422, problems=problems)
    problem = await _upload_avatar(app, session, str(saved["id"]), avatar)
    app.flash(session, "ok", f"Saved {saved.get('name') or saved['id']}.")
    for warning in saved.get("warnings") or []:
        app.flash(session, "warn", f"{warning.get('field')}: {warning.get('message')}")
    if problem:
        app.flash(session, "error", problem)
    return RedirectResponse("/models?" + _query(show_hidden=bool(saved.get("hidden"))), status_code=303)


@router.post("/models/action", summary="Clone, hide, unhide, enable, disable or delete a model file")
async def model_action(
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    id: Annotated[str, Form(max_length=256)],
    action: Annotated[str, Form(max_length=20)],
    back: Annotated[str, Form(max_length=4000)] = "/models",
) -> Response:
    if action not in ACTIONS:
        app.flash(session, "error", f"unknown action {action!r}")
    else:
        try:
            if action == "clone":
                clone = await app.registry.clone_model(session.token, id)
                app.flash(session, "ok", f"Cloned to {clone['id']}.")
            elif action == "delete":
                await app.registry.delete_model(session.token, id)
                app.flash(session, "ok", f"Deleted {id}.")
            else:
                await app.registry.set_flag(session.token, id, action)
                app.flash(session, "ok", f"{id}: {action} done.")
        except BackendError as exc:
            app.flash(session, "error", exc.message)
    target = back if back.startswith("/models") and "//" not in back else "/models"
    return RedirectResponse(target, status_code=303)


@router.get("/models/details", summary="The effective configuration with provenance, and the history")
async def model_details(request: Request, app: ConsoleDep, session: SessionDep, id: str) -> Response:
    model = await app.registry.get_model(session.token, id)
    effective = await app.registry.effective(session.token, id)
    revisions = await app.registry.revisions(session.token, id)
    params = [
        {"key": key, "value": json.dumps(entry.get("value"), ensure_ascii=False), "source": entry.get("source", "")}
        for key, entry in sorted(effective.get("params", {}).items())
    ]
    return app.page(
        request,
        "model_details.html",
        session,
        model=card(model),
        version=model.get("version"),
        effective=effective,
        params=params,
        revisions=revisions,
    )


@router.post("/models/restore", summary="Make an earlier version of a model file current")
async def restore_model(
    app: ConsoleDep,
    session: CheckedSessionDep,
    id: Annotated[str, Form(max_length=256)],
    version: Annotated[int, Form(ge=1)],
) -> Response:
    try:
        restored = await app.registry.restore(session.token, id, version)
        app.flash(session, "ok", f"Restored version {version} of {id} (now version {restored.get('version')}).")
    except BackendError as exc:
        app.flash(session, "error", exc.message)
    return RedirectResponse("/models/details?" + _query(id=id), status_code=303)


@router.get("/avatar", summary="A model's avatar, fetched with the session's token")
async def avatar(app: ConsoleDep, session: SessionDep, id: str, v: str = "") -> Response:
    upstream = await app.registry.avatar(session.token, id)
    return Response(
        upstream.content,
        media_type=upstream.headers.get("content-type", "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )


def _download(content: bytes, filename: str) -> Response:
    safe = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in filename)
    return Response(
        content, media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{safe}"'}
    )


def _filename(upstream_disposition: str, fallback: str) -> str:
    if 'filename="' in upstream_disposition:
        return upstream_disposition.split('filename="', 1)[1].split('"', 1)[0]
    return fallback


@router.get("/models/export-one", summary="Download one model as an Open WebUI file")
async def export_one(app: ConsoleDep, session: SessionDep, id: str) -> Response:
    upstream = await app.registry.export_one(session.token, id)
    stamp = int(datetime.now(UTC).timestamp())
    return _download(upstream.content, _filename(upstream.headers.get("content-disposition", ""), f"{id}-{stamp}.json"))


@router.get("/models/export-all", summary="Download every readable model")
async def export_all(app: ConsoleDep, session: SessionDep) -> Response:
    upstream = await app.registry.export_all(session.token)
    return _download(upstream.content, _filename(upstream.headers.get("content-disposition", ""), "models-export.json"))


@router.get("/models/import", summary="The import page")
async def import_page(request: Request, app: ConsoleDep, session: SessionDep) -> Response:
    return app.page(request, "import.html", session, report=None, pending=app.pending_imports.get(session.id))


@router.post("/models/import", summary="Dry-run an uploaded file, or apply the one checked before")
async def import_models(
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    step: Annotated[str, Form()] = "dry_run",
    mode: Annotated[str, Form()] = "create",
    file: UploadFile | None = None,
) -> Response:
    mode = mode if mode in ("create", "upsert") else "create"
    if step == "apply":
        pending = app.pending_imports.pop(session.id, None)
        if pending is None:
            app.flash(session, "error", "upload the file again: nothing is waiting to be imported")
            return RedirectResponse("/models/import", status_code=303)
        name, data = pending
    else:
        if file is None or not file.filename:
            app.flash(session, "error", "choose a JSON file to import")
            return RedirectResponse("/models/import", status_code=303)
        name, data = file.filename, await file.read(app.settings.max_upload_bytes + 1)
        if len(data) > app.settings.max_upload_bytes:
            app.flash(session, "error", f"the file is larger than {app.settings.max_upload_bytes} bytes")
            return RedirectResponse("/models/import", status_code=303)
    dry_run = step != "apply"
    error = None
    report: dict[str, Any] | None = None
    try:
        report = await app.registry.import_models(session.token, data, dry_run=dry_run, mode=mode)
    except BackendError as exc:
        error = exc.message
    if dry_run and report is not None:
        app.pending_imports[session.id] = (name, data)
    if not dry_run and report is not None:
        app.flash(
            session,
            "ok",
            f"Imported {name}: {len(report.get('created', []))} created, {len(report.get('updated', []))} updated.",
        )
        return RedirectResponse("/models", status_code=303)
    with contextlib.suppress(KeyError):
        if error:
            app.pending_imports.pop(session.id)
    return app.page(
        request,
        "import.html",
        session,
        status_code=422 if error else 200,
        report=report,
        error=error,
        pending=app.pending_imports.get(session.id),
        mode=mode,
        file_name=name,
    )
