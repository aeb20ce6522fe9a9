"""REST routes for model files under ``/api/v1/models``.

Model ids may contain ``/`` and ``:`` (``hf.co/user/repo:Q4_K_M``), so the id is a path parameter and the
routes with a suffix (``/clone``, ``/export`` ...) are declared before the plain ``/models/{id}``.
"""

from __future__ import annotations

import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, File, Header, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse

from modelhub_common.auth import parse_authorization_header
from modelhub_common.if_match import IF_MATCH_PATTERN, parse_if_match
from modelhub_common.openapi_links import json_body, links_to
from modelhub_common.webapp import CurrentPrincipal
from modelhub_registry.adapters.models_repository import AvatarRef, ListQuery, ModelRow, Revision, StoredModel
from modelhub_registry.domain.model_file import ModelFileSpec, ModelMeta
from modelhub_registry.domain.openwebui import export_filename, share_payload
from modelhub_registry.entrypoints.deps import Services, services
from modelhub_registry.errors import InvalidModelError, TooLargeError

router = APIRouter(prefix="/api/v1", tags=["models"])
NO_AVATAR = AvatarRef(None, None, None, None)


def model_json(stored: StoredModel) -> dict[str, Any]:
    model = stored.model
    body = model.model_dump(mode="json", exclude={"params", "meta"})
    body["params"] = model.params.model_dump(mode="json", exclude_none=True)
    meta = body["meta"] = model.meta.model_dump(mode="json", exclude_none=True)
    if stored.avatar.key:
        meta["profile_image_url"] = f"/api/v1/models/{model.id}/avatar"
    elif stored.avatar.url:
        meta["profile_image_url"] = stored.avatar.url
    return body


def _timestamp(moment: datetime) -> str:
    # As pydantic writes it (model_json), so a list and a get show the same text.
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def row_json(row: ModelRow) -> dict[str, Any]:
    """:func:`model_json` of a database row, built from its columns: the row was validated when it was written,
    so a list page skips validating and dumping every row again."""
    model_id = row["id"]
    meta = dict(row["meta"])
    if row["avatar_key"]:
        meta["profile_image_url"] = f"/api/v1/models/{model_id}/avatar"
    elif row["avatar_url"]:
        meta["profile_image_url"] = row["avatar_url"]
    grants = row["grants"]
    return {
        "id": model_id,
        "base_model_id": row["base_model_id"],
        "name": row["name"],
        "hidden": row["hidden"],
        "enabled": row["enabled"],
        "access": {
            "public_read": row["public_read"],
            "grants": json.loads(grants) if isinstance(grants, str) else grants,
        },
        "owner_id": row["owner_id"],
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
        "version": row["version"],
        "params": row["params"],
        "meta": meta,
    }


def json_response(body: Any) -> Response:
    """Encoded once here, as FastAPI's JSONResponse would, without its per-value conversion pass."""
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(text.encode(), media_type="application/json")


def _revision_json(revision: Revision, *, with_snapshot: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": revision.version,
        "action": revision.action,
        "actor": revision.actor,
        "changed_fields": revision.changed_fields,
        "created_at": revision.created_at.isoformat(),
    }
    if with_snapshot:
        body["model"] = revision.snapshot
    return body


def _version_header(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    try:
        return parse_if_match(if_match)
    except ValueError as exc:
        raise InvalidModelError('If-Match: must be the model\'s version number, e.g. "3"') from exc


async def _with_warnings(
    svc: Services, body: dict[str, Any], tool_ids: list[str], meta: ModelMeta | None = None
) -> dict[str, Any]:
    """``body`` plus ``warnings`` (``[{field, message}]``) when the model names tool servers that are not
    registered, or filters (``meta``'s filterIds, defaultFilterIds) that are not configured: stored anyway, as
    an Open WebUI file may name servers and filters added later."""
    warnings: list[dict[str, str]] = []
    if svc.tool_servers is not None and tool_ids:
        warnings += await svc.tool_servers.tool_id_warnings(tool_ids)
    if svc.filters is not None and meta is not None and (meta.filter_ids or meta.default_filter_ids):
        warnings += await svc.filters.filter_id_warnings(
            {"meta.filterIds": meta.filter_ids, "meta.defaultFilterIds": meta.default_filter_ids}
        )
    if warnings:
        body["warnings"] = warnings
    return body


# ---- collection routes


@router.get("/models", summary="Model files the caller can read")
async def list_models(
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
    q: Annotated[str | None, Query(description="search in id, name and description", max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=256)] = None,
    include_hidden: bool = False,
    include_disabled: bool = False,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: str | None = None,
) -> Response:
    limit = min(limit, svc.settings.max_list_limit)
    query = ListQuery(q, tag, owner, include_hidden, include_disabled, limit, cursor)
    try:
        page = await svc.models.list_rows(principal, query)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidModelError("cursor: not a cursor this API gave out; start again without it") from exc
    return json_response({"items": [row_json(row) for row in page.items], "next_cursor": page.next_cursor})


_ONE = "/api/v1/models/{model_id}"
#: What a client can do next with the model file it created, by the id in the answer.
_MODEL_LINKS = links_to(
    201,
    "model_id",
    {
        "GetModel": ("GET", _ONE),
        "ChangeModel": ("PATCH", _ONE),
        "DeleteModel": ("DELETE", _ONE),
        "CloneModel": ("POST", f"{_ONE}/clone"),
        "Revisions": ("GET", f"{_ONE}/revisions"),
        "Effective": ("GET", f"{_ONE}/effective"),
        "Avatar": ("GET", f"{_ONE}/avatar"),
    },
)


@router.post(
    "/models",
    status_code=201,
    summary="Create a model file",
    responses=_MODEL_LINKS,
    openapi_extra=json_body(ModelFileSpec),
)
async def create_model(
    principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)], body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    model = await svc.models.create(body, principal)
    # A new model has no avatar yet: answer from memory instead of reading the row back.
    return await _with_warnings(svc, model_json(StoredModel(model, NO_AVATAR)), model.meta.tool_ids, model.meta)


@router.get("/models/export", summary="Every model the caller can read, as one Open WebUI JSON array")
async def export_all(principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]) -> StreamingResponse:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        svc.transfer.export_all(principal),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="models-export-{stamp}.json"'},
    )


@router.post("/models/import", summary="Import Open WebUI model files (all or nothing)")
async def import_models(
    request: Request,
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
    mode: Literal["create", "upsert"] = "create",
    dry_run: bool = False,
    file: Annotated[UploadFile | None, File(description="the JSON file, when sent as multipart")] = None,
) -> dict[str, Any]:
    limit = svc.settings.max_import_bytes
    if file is not None:
        raw = await file.read(limit + 1)
    elif request.headers.get("content-type", "").lower().startswith("multipart/"):
        # The form was read already and had no file in it: there is no body left to fall back on.
        raise InvalidModelError("file: a multipart import needs the JSON file as the part named 'file'")
    else:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise TooLargeError(f"the import is {length} bytes; the limit is {limit}; split the file")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                break
    if len(raw) > limit:
        raise TooLargeError(f"the import is larger than {limit} bytes; split the file")
    token = parse_authorization_header(request.headers.get("authorization"))
    report = await svc.transfer.import_document(raw, principal, mode=mode, dry_run=dry_run, token=token)
    return {
        "dry_run": report.dry_run,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "warnings": report.warnings,
        "knowledge_checked": report.knowledge_checked,
    }


# ---- routes with a suffix after the id (declared before /models/{id})


@router.post("/models/{model_id:path}/clone", status_code=201, summary="Copy a model file to {id}-clone")
async def clone_model(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    model = await svc.models.clone(model_id, principal)
    return model_json(await svc.models.get(model.id, principal))


def _flag_route(path: str, flag: str, value: bool, summary: str) -> None:
    @router.post(f"/models/{{model_id:path}}/{path}", summary=summary, name=f"{path}_model")
    async def set_flag(
        model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
    ) -> dict[str, Any]:
        model = await svc.models.set_flag(model_id, principal, flag, value)
        return model_json(await svc.models.get(model.id, principal))


_flag_route("hide", "hidden", True, "Hide from the model selector (still usable by id)")
_flag_route("unhide", "hidden", False, "Show in the model selector again")
_flag_route("enable", "enabled", True, "Allow the model to be used")
_flag_route("disable", "enabled", False, "Stop the model from being used")


@router.get("/models/{model_id:path}/export", summary="One model as an Open WebUI file")
async def export_one(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    body = [await svc.transfer.export_one(model_id, principal)]
    filename = export_filename(model_id, datetime.now(UTC))
    return Response(
        json.dumps(body),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/models/{model_id:path}/share", summary="What to post to openwebui.com to share the model")
async def share(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return share_payload(await svc.transfer.export_one(model_id, principal))


@router.put("/models/{model_id:path}/avatar", summary="Set the avatar (PNG, JPEG, WebP or GIF)")
async def put_avatar(
    model_id: str,
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
    file: Annotated[UploadFile, File(description="the image")],
) -> dict[str, Any]:
    data = await file.read(svc.settings.max_avatar_bytes + 1)
    model = await svc.models.set_avatar(model_id, data, principal)
    return model_json(await svc.models.get(model.id, principal))


@router.get("/models/{model_id:path}/avatar", summary="The avatar image", response_model=None)
async def get_avatar(
    model_id: str,
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    data, content_type, etag = await svc.models.avatar(model_id, principal)
    quoted = f'"{etag}"'
    headers = {"ETag": quoted, "Cache-Control": "private, max-age=300"}
    if if_none_match is not None and quoted in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=content_type, headers=headers)


@router.get("/models/{model_id:path}/revisions/{version}", summary="One earlier version, whole")
async def get_revision(
    model_id: str, version: int, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    return _revision_json(await svc.models.revision(model_id, version, principal), with_snapshot=True)


@router.post("/models/{model_id:path}/revisions/{version}/restore", summary="Make an earlier version current")
async def restore_revision(
    model_id: str, version: int, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    model = await svc.models.restore(model_id, version, principal)
    return model_json(await svc.models.get(model.id, principal))


@router.get("/models/{model_id:path}/revisions", summary="Every version: who changed what, when")
async def list_revisions(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    revisions = await svc.models.revisions(model_id, principal)
    return {"items": [_revision_json(r, with_snapshot=False) for r in revisions]}


@router.get("/models/{model_id:path}/effective", summary="The resolved chain and merged params, with sources")
async def effective(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> dict[str, Any]:
    result = await svc.models.effective(model_id, principal)
    return {
        "id": result.model.id,
        "usable": result.usable,
        "problems": result.problems,
        "chain": [
            {"kind": link.kind, "id": link.id, "enabled": link.enabled, "available": link.available}
            for link in result.chain
        ],
        "params": {key: {"value": p.value, "source": p.source} for key, p in result.params.items()},
        "precedence": "request overrides > model file > the model files it is built on (nearest first) > base model",
    }


# ---- the model itself


@router.get("/models/{model_id:path}", summary="One model file", response_model=dict[str, Any])
async def get_model(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    # Straight from the row, as a list page is (row_json): no validation and dump of a model object.
    row = await svc.models.get_row(model_id, principal)
    response = json_response(row_json(row))
    response.headers["ETag"] = f'"{row["version"]}"'
    return response


@router.patch("/models/{model_id:path}", summary="Change a model file (JSON merge patch)")
async def update_model(
    model_id: str,
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
    body: Annotated[dict[str, Any], Body()],
    if_match: Annotated[
        str,
        Header(
            description="the version you edited, to refuse lost updates",
            json_schema_extra={"pattern": IF_MATCH_PATTERN},
        ),
    ] = "",
) -> dict[str, Any]:
    model = await svc.models.update(model_id, body, principal, expected_version=_version_header(if_match))
    return await _with_warnings(
        svc, model_json(await svc.models.get(model.id, principal)), model.meta.tool_ids, model.meta
    )


@router.delete("/models/{model_id:path}", status_code=204, summary="Delete a model file")
async def delete_model(
    model_id: str, principal: CurrentPrincipal, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.models.delete(model_id, principal)
    return Response(status_code=204)
