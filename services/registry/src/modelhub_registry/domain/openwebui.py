"""Open WebUI's model files: reading every import shape found in the wild, and writing its export shape.

Pure functions over JSON values; the service layer decides what to store. Import is lenient where Open WebUI
is lenient (unknown keys, string tags, ``null`` lists, broken avatars) and strict where a silent change would
surprise the user (out-of-range params, bad ids, malformed access), which becomes a per-item error instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from modelhub_registry.domain.limits import Limits
from modelhub_registry.domain.model_file import (
    Access,
    Grant,
    ModelFile,
    ModelFileSpec,
    ModelMeta,
    ModelParams,
    check_limits,
)
from modelhub_registry.errors import RegistryError

__all__ = [
    "SHARE_URL",
    "DataUriError",
    "DecodedImage",
    "ImportDocumentError",
    "ImportItem",
    "ItemError",
    "decode_data_uri",
    "encode_data_uri",
    "export_filename",
    "normalize_item",
    "parse_import_document",
    "share_payload",
    "export_row",
    "to_openwebui",
]

SHARE_URL: Final = "https://openwebui.com/models/create"

ACCEPTED_SHAPES: Final = (
    'a JSON array of model objects, {"models": [...]}, a single model object, or items wrapping the model under "info"'
)

# Open WebUI accepts these avatar types and rejects SVG (it can carry scripts).
AVATAR_MIME_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

# Open WebUI's stock avatar: a path on the exporting instance, not something the user chose.
_OPEN_WEBUI_DEFAULT_AVATAR: Final = "/static/favicon.png"

# A longer "URL" is almost certainly pasted data, and it is stored unbounded in meta otherwise.
_MAX_AVATAR_URL_LENGTH: Final = 2048

# Legacy ``/api/models`` entries hold the model file under this key, with listing fields around it.
_INFO_KEY: Final = "info"


class ImportDocumentError(RegistryError):
    """The import document as a whole cannot be read; no item is looked at. ``http_status`` is 413 or 422."""

    def __init__(self, message: str, *, code: str, http_status: int) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status


class DataUriError(RegistryError):
    """A ``data:`` URI is malformed, not base64, empty or too large. The message completes "the data: URI …"."""

    code = "invalid_data_uri"
    http_status = 422


@dataclass(frozen=True)
class DecodedImage:
    """Bytes of a ``data:`` URI as declared; whether they really are that image is checked later."""

    mime_type: str
    data: bytes


@dataclass(frozen=True)
class ImportItem:
    index: int
    spec: ModelFileSpec
    avatar: DecodedImage | None
    avatar_url: str | None
    created_at: datetime | None
    updated_at: datetime | None
    owner_hint: str | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ItemError:
    index: int
    id: str | None
    reason: str


@dataclass
class _Findings:
    """What normalising one item noticed: problems refuse the item, warnings do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# --- the document --------------------------------------------------------------------------------------


def parse_import_document(raw: bytes, limits: Limits) -> list[Any]:
    """The raw items of an import document in any accepted shape, before any item is checked."""
    if len(raw) > limits.max_import_bytes:
        raise ImportDocumentError(
            f"The document is {len(raw)} bytes; the import limit is {limits.max_import_bytes} bytes. "
            "Split it into smaller files and import them one at a time.",
            code="import_too_large",
            http_status=413,
        )
    items = _items_of(_load_json(raw))
    if not items:
        raise ImportDocumentError(
            "The document holds no models: the list is empty.", code="empty_import", http_status=422
        )
    if len(items) > limits.max_import_items:
        raise ImportDocumentError(
            f"The document holds {len(items)} models; the import limit is {limits.max_import_items}. "
            "Split it into smaller files and import them one at a time.",
            code="too_many_import_items",
            http_status=413,
        )
    return items


def _load_json(raw: bytes) -> Any:
    try:
        # Editors on Windows often save UTF-8 with a byte-order mark; it is not part of the document.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportDocumentError(
            f"The document is not UTF-8 text (invalid byte at offset {exc.start}).",
            code="invalid_json",
            http_status=422,
        ) from exc
    if not text.strip():
        raise ImportDocumentError("The document is empty.", code="empty_import", http_status=422)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ImportDocumentError(
            f"The document is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            code="invalid_json",
            http_status=422,
        ) from exc
    except RecursionError as exc:
        raise ImportDocumentError(
            "The document is not usable JSON: it is nested too deeply.", code="invalid_json", http_status=422
        ) from exc


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, but they would pass range checks and make our exports invalid.
    raise ImportDocumentError(
        f"The document is not valid JSON: {name} is not a JSON value.", code="invalid_json", http_status=422
    )


def _items_of(document: Any) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        models = document.get("models")
        if isinstance(models, list):
            return models
        if models is None and any(key in document for key in ("id", "name", _INFO_KEY)):
            return [document]
        described = 'an object whose "models" is not a list' if models is not None else "an object"
        raise ImportDocumentError(
            f"The document is {described} that is not a model. Accepted shapes: {ACCEPTED_SHAPES}.",
            code="unsupported_import_shape",
            http_status=422,
        )
    raise ImportDocumentError(
        f"The document is {_json_type(document)}. Accepted shapes: {ACCEPTED_SHAPES}.",
        code="unsupported_import_shape",
        http_status=422,
    )


def _shown(value: Any) -> str:
    """A value quoted for a message, cut short: it may be a megabyte of pasted data."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- one item ------------------------------------------------------------------------------------------


def normalize_item(item: Any, index: int, limits: Limits) -> ImportItem | ItemError:
    """One raw item as a checked spec plus what the service needs to store beside it, or why it is refused."""
    if not isinstance(item, dict):
        return ItemError(index=index, id=None, reason=f"item is {_json_type(item)}, not a model object")
    findings = _Findings()
    model = _unwrap_info(item, findings)
    raw_id = model.get("id")
    item_id = raw_id if isinstance(raw_id, str) else None

    meta, hidden = _split_meta(model.get("meta"), findings)
    avatar, avatar_url = _take_avatar(meta.get("profile_image_url"), limits, findings)
    meta["profile_image_url"] = avatar_url
    # Absent keys stay absent so that a missing id or name reads "is required", not "must be a string".
    fields: dict[str, Any] = {key: model[key] for key in ("id", "base_model_id", "name") if key in model}
    fields |= {
        "params": {} if model.get("params") is None else model["params"],
        "meta": meta,
        "hidden": hidden,
        "enabled": True if model.get("is_active") is None else model["is_active"],
        "access": _access_of(model, findings),
    }
    spec = _validate_spec(fields, limits, findings)
    if spec is None or findings.problems:
        return ItemError(index=index, id=item_id, reason="; ".join(findings.problems))

    owner = model.get("user_id")
    return ImportItem(
        index=index,
        spec=spec,
        avatar=avatar,
        avatar_url=avatar_url,
        created_at=_epoch_time(model.get("created_at"), "created_at", findings),
        updated_at=_epoch_time(model.get("updated_at"), "updated_at", findings),
        owner_hint=owner if isinstance(owner, str) and owner else None,
        warnings=findings.warnings,
    )


def _unwrap_info(item: dict[str, Any], findings: _Findings) -> dict[str, Any]:
    """Legacy ``/api/models`` entries carry the model file under ``info`` and listing fields around it."""
    info = item.get(_INFO_KEY)
    if info is None:
        return item
    if not isinstance(info, dict):
        findings.problem(_INFO_KEY, "must be an object holding the model")
        return item
    model = dict(info)
    for key in ("id", "name"):
        outer = item.get(key)
        if model.get(key) is None and outer is not None:
            model[key] = outer
        elif outer is not None and outer != model.get(key):
            findings.warn(
                f"{key} {_shown(outer)} around info differs from info.{key} {_shown(model.get(key))}; used info.{key}"
            )
    return model


def _split_meta(raw: Any, findings: _Findings) -> tuple[dict[str, Any], Any]:
    """A copy of meta without ``hidden``, which is a top-level flag here, and that flag."""
    if raw is None:
        return {}, False
    if not isinstance(raw, dict):
        findings.problem("meta", "must be an object")
        return {}, False
    meta = dict(raw)
    hidden = meta.pop("hidden", None)
    return meta, False if hidden is None else hidden


def _validate_spec(fields: dict[str, Any], limits: Limits, findings: _Findings) -> ModelFileSpec | None:
    try:
        spec = ModelFileSpec.model_validate(fields)
    except ValidationError as exc:
        findings.problems.extend(_describe_validation_errors(exc))
        return None
    findings.problems.extend(f"{problem.field}: {problem.message}" for problem in check_limits(spec, limits))
    return spec


def _epoch_time(value: Any, path: str, findings: _Findings) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    # Timestamps only inform history; a bad one is not worth refusing the model for.
    findings.warn(f"{path}: ignored {_shown(value)}, which is not a time in epoch seconds")
    return None


# --- validation messages -------------------------------------------------------------------------------

# Spec fields that Open WebUI's files spell differently; messages use the file's names.
_SOURCE_NAMES: Final = {"enabled": "is_active", "hidden": "meta.hidden"}

_TYPE_WORDS: Final = {
    "string_type": "a string",
    "list_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _describe_validation_errors(exc: ValidationError) -> list[str]:
    described: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        path, branch = _error_path(error)
        messages = described.setdefault(path, [])
        message = _error_message(error)
        if branch and messages and messages[-1].startswith("must be "):
            # Each member of a union (e.g. a title that may be a list or a string) reports separately.
            messages[-1] = f"{messages[-1]} or {_TYPE_WORDS[error['type']]}"
        elif message not in messages:
            messages.append(message)
    return [f"{path}: {message}" for path, messages in described.items() for message in messages]


def _error_path(error: ErrorDetails) -> tuple[str, bool]:
    """The dotted field path, and whether the last part of pydantic's loc named a union member."""
    loc = list(error["loc"])
    branch = error["type"] in _TYPE_WORDS and len(loc) > 1 and _looks_like_type_name(loc[-1])
    if branch:
        loc = loc[:-1]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    for name, source in _SOURCE_NAMES.items():
        if path == name or path.startswith(f"{name}."):
            path = source + path[len(name) :]
    return path or "item", branch


def _looks_like_type_name(part: str | int) -> bool:
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "none"} or "[" in part)


def _error_message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    bounds = {
        "less_than_equal": ("≤", "le"),
        "less_than": ("<", "lt"),
        "greater_than_equal": ("≥", "ge"),
        "greater_than": (">", "gt"),
    }
    if kind in bounds:
        sign, key = bounds[kind]
        return f"must be {sign} {_number(ctx.get(key))}"
    if kind == "missing":
        return "is required"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    message = str(error["msg"])
    return message[:1].lower() + message[1:]


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- access --------------------------------------------------------------------------------------------


def _access_of(model: dict[str, Any], findings: _Findings) -> Access:
    # The grant list is the newer form; a file carrying both was written by a version that reads grants.
    if model.get("access_grants") is not None:
        return _access_from_grants(model["access_grants"], findings)
    if "access_control" in model:
        return _access_from_access_control(model["access_control"], findings)
    # A file that says nothing about access stays private: making it public must be a visible choice.
    return Access()


def _access_from_access_control(raw: Any, findings: _Findings) -> Access:
    """Open WebUI < 0.8: ``null`` is public read, ``{}`` private, otherwise read/write id lists."""
    if raw is None:
        return Access(public_read=True)
    if not isinstance(raw, dict):
        findings.problem("access_control", "must be null, {} or {read: {...}, write: {...}}")
        return Access()
    grants: list[Grant] = []
    for permission in ("read", "write"):
        section = raw.get(permission)
        if section is None:
            continue
        if not isinstance(section, dict):
            findings.problem(f"access_control.{permission}", "must be an object with group_ids and user_ids")
            continue
        for principal_type in ("group", "user"):
            path = f"access_control.{permission}.{principal_type}_ids"
            ids = section.get(f"{principal_type}_ids")
            if ids is None:
                continue
            if not isinstance(ids, list):
                findings.problem(path, "must be a list of ids")
                continue
            for i, principal_id in enumerate(ids):
                grant = _grant(principal_type, principal_id, permission, f"{path}[{i}]", findings)
                if grant is not None and grant not in grants:
                    grants.append(grant)
    return Access(grants=grants)


def _access_from_grants(raw: Any, findings: _Findings) -> Access:
    """Open WebUI ≥ 0.8: a list of grants; user ``*`` stands for every user."""
    if not isinstance(raw, list):
        findings.problem("access_grants", "must be a list of grants")
        return Access()
    public_read = False
    grants: list[Grant] = []
    for i, entry in enumerate(raw):
        path = f"access_grants[{i}]"
        if not isinstance(entry, dict):
            findings.problem(path, "must be an object")
            continue
        principal_type = entry.get("principal_type")
        principal_id = entry.get("principal_id")
        permission = entry.get("permission")
        if principal_type == "user" and principal_id == "*":
            if permission == "write":
                # There is no "everyone may edit" here; reading is the most that can be kept.
                findings.warn(f"{path}: write access for every user is not supported; imported as public read")
            elif permission != "read":
                findings.problem(f"{path}.permission", "must be 'read' or 'write'")
                continue
            public_read = True
            continue
        grant = _grant(principal_type, principal_id, permission, path, findings)
        if grant is not None and grant not in grants:
            grants.append(grant)
    return Access(public_read=public_read, grants=grants)


def _grant(principal_type: Any, principal_id: Any, permission: Any, path: str, findings: _Findings) -> Grant | None:
    try:
        return Grant.model_validate(
            {"principal_type": principal_type, "principal_id": principal_id, "permission": permission}
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            key = str(error["loc"][0]) if error["loc"] else ""
            # Legacy lists hold bare ids, so only the id can be wrong there; name the list entry itself.
            where = path if path.startswith("access_control") else f"{path}.{key}"
            findings.problem(where, _error_message(error))
        return None


# --- avatars -------------------------------------------------------------------------------------------


def decode_data_uri(uri: str, max_bytes: int) -> DecodedImage:
    """The declared type and bytes of a base64 ``data:`` URI (RFC 2397); strict, so truncation is caught."""
    if uri[:5].lower() != "data:":
        raise DataUriError("is not a data: URI")
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise DataUriError("is not a valid data: URI (no comma before the data)")
    parameters = [part.strip().lower() for part in header.split(";")]
    if len(parameters) < 2 or parameters[-1] != "base64":
        raise DataUriError("is not base64-encoded")
    mime_type = parameters[0] or "text/plain"
    # Decoding is skipped for payloads that cannot fit: base64 makes 3 bytes of every 4 characters.
    if (len(payload) // 4) * 3 > max_bytes + 3:
        raise DataUriError(f"is larger than the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataUriError(f"has invalid base64 data, perhaps truncated ({exc})") from exc
    if not data:
        raise DataUriError("is empty")
    if len(data) > max_bytes:
        raise DataUriError(f"is {len(data)} bytes; the limit is {max_bytes} bytes")
    return DecodedImage(mime_type="image/jpeg" if mime_type == "image/jpg" else mime_type, data=data)


def encode_data_uri(image: DecodedImage) -> str:
    """The inverse of :func:`decode_data_uri`, for embedding a stored avatar in an export."""
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def _take_avatar(value: Any, limits: Limits, findings: _Findings) -> tuple[DecodedImage | None, str | None]:
    """A decoded ``data:`` avatar or an http(s) URL to keep; anything else is dropped with a warning.

    A broken avatar never refuses a model: exports in the wild carry placeholders and stale paths, and the
    model file is what the user is importing.
    """
    if value is None or value == "" or value == _OPEN_WEBUI_DEFAULT_AVATAR:
        return None, None
    if not isinstance(value, str):
        findings.warn(f"meta.profile_image_url: avatar dropped because it is {_json_type(value)}, not text")
        return None, None
    if value[:5].lower() == "data:":
        return _avatar_from_data_uri(value, limits, findings), None
    if _is_web_url(value):
        return None, value
    findings.warn(
        f"meta.profile_image_url: avatar {_shown(value)} dropped because it is neither an http(s) URL nor a data: URI"
    )
    return None, None


def _avatar_from_data_uri(uri: str, limits: Limits, findings: _Findings) -> DecodedImage | None:
    try:
        image = decode_data_uri(uri, limits.max_avatar_bytes)
    except DataUriError as exc:
        findings.warn(f"meta.profile_image_url: avatar dropped because the data: URI {exc.message}")
        return None
    if image.mime_type not in AVATAR_MIME_TYPES:
        findings.warn(
            f"meta.profile_image_url: avatar dropped because it is {image.mime_type}; "
            "only PNG, JPEG, GIF and WebP avatars are accepted"
        )
        return None
    return image


def _is_web_url(value: str) -> bool:
    if len(value) > _MAX_AVATAR_URL_LENGTH:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


# --- export --------------------------------------------------------------------------------------------


def to_openwebui(model: ModelFile, *, avatar_data_uri: str | None) -> dict[str, Any]:
    """One model in the shape of Open WebUI's export (v0.11); an export file is a list of these."""
    return {
        "id": model.id,
        "user_id": model.owner_id,
        "base_model_id": model.base_model_id,
        "name": model.name,
        "params": _json_fields(model.params),
        "meta": _export_meta(model, avatar_data_uri),
        "access_grants": _export_grants(model),
        "is_active": model.enabled,
        "created_at": _epoch_seconds(model.created_at),
        "updated_at": _epoch_seconds(model.updated_at),
    }


def export_row(row: dict[str, Any], *, avatar_data_uri: str | None) -> dict[str, Any]:
    """:func:`to_openwebui` of a stored row, straight from its columns (no model objects): the row holds what
    validation already accepted, so the export only renames fields to Open WebUI's names and fills defaults.
    Equal to ``to_openwebui(row_to_model(row).model, ...)`` (a test holds them together)."""
    grants = row["grants"]
    if isinstance(grants, str):
        grants = json.loads(grants)
    # The row's meta never holds the avatar (see models_repository): it travels as ``avatar_data_uri``.
    meta: dict[str, Any] = {"profile_image_url": avatar_data_uri}
    meta.update(_META_EXPORT(row["meta"] or {}))
    meta["tags"] = [{"name": tag} for tag in meta.get("tags") or []]
    meta["hidden"] = row["hidden"]
    listed = [("user", "*", "read")] if row["public_read"] else []
    listed += [(g["principal_type"], g["principal_id"], g["permission"]) for g in grants]
    return {
        "id": row["id"],
        "user_id": row["owner_id"],
        "base_model_id": row["base_model_id"],
        "name": row["name"],
        "params": _PARAMS_EXPORT(row["params"] or {}),
        "meta": meta,
        "access_grants": [
            {
                "resource_type": "model",
                "resource_id": row["id"],
                "principal_type": principal_type,
                "principal_id": principal_id,
                "permission": permission,
            }
            for principal_type, principal_id, permission in listed
        ],
        "is_active": row["enabled"],
        "created_at": _epoch_seconds(row["created_at"]),
        "updated_at": _epoch_seconds(row["updated_at"]),
    }


def _exporter(cls: type[BaseModel]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Turns a stored dump of ``cls`` (field names, None left out) into :func:`_json_fields`'s shape: Open
    WebUI's names, known fields that are unset left out, defaults filled in, unknown keys kept as stored."""
    plan: list[tuple[str, str, Callable[[Any], Any] | None, Any]] = []
    for name, info in cls.model_fields.items():
        nested: Callable[[Any], Any] | None = None
        inner = _model_class(info.annotation)
        if inner is not None:
            convert = _exporter(inner)
            nested = lambda v, c=convert: [c(i) for i in v] if isinstance(v, list) else c(v)  # noqa: E731
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = _json_fields(default)
        plan.append((name, info.serialization_alias or name, nested, default))
    known = {name for name, *_ in plan}

    def export(stored: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, alias, nested, default in plan:
            value = stored.get(name, default)
            if value is None:
                continue
            out[alias] = nested(value) if nested is not None else value
        out.update((k, v) for k, v in stored.items() if k not in known)
        return out

    return export


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The model class in ``X``, ``list[X]``, ``Annotated[list[X], ...]`` or ``X | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _export_meta(model: ModelFile, avatar_data_uri: str | None) -> dict[str, Any]:
    # A stored http(s) URL is still meaningful elsewhere; any other stored value (e.g. our own avatar
    # path) is not, and the avatar travels as the data URI instead.
    external = model.meta.profile_image_url
    meta: dict[str, Any] = {
        "profile_image_url": avatar_data_uri or (external if external and _is_web_url(external) else None)
    }
    meta.update(_json_fields(model.meta, skip=frozenset({"profile_image_url"})))
    meta["tags"] = [{"name": tag} for tag in model.meta.tags]
    meta["hidden"] = model.hidden
    return meta


def _export_grants(model: ModelFile) -> list[dict[str, Any]]:
    grants = [("user", "*", "read")] if model.access.public_read else []
    grants += [(g.principal_type, g.principal_id, g.permission) for g in model.access.grants]
    return [
        {
            "resource_type": "model",
            "resource_id": model.id,
            "principal_type": principal_type,
            "principal_id": principal_id,
            "permission": permission,
        }
        for principal_type, principal_id, permission in grants
    ]


def _json_fields(value: BaseModel, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Fields by their Open WebUI names, leaving out known fields that are unset (None) but keeping every
    unknown key exactly as given, ``null`` included, so that an export re-imports to the same model."""
    out: dict[str, Any] = {}
    for name, info in type(value).model_fields.items():
        item = getattr(value, name)
        if name in skip or item is None:
            continue
        out[info.serialization_alias or name] = _json_value(item)
    out.update(value.model_extra or {})
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _json_fields(value)
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    return value


def _epoch_seconds(moment: datetime) -> int:
    # A naive datetime here can only have come from our own UTC clock.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp())


_UNSAFE_FILENAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILENAME_ID_LENGTH: Final = 200


def export_filename(model_id: str, now: datetime) -> str:
    """``{id}-{timestamp}.json`` as Open WebUI names it (milliseconds), safe in a quoted Content-Disposition.

    Ids such as ``hf.co/user/repo:Q4_K_M`` become ``hf.co_user_repo_Q4_K_M``: path separators, colons,
    quotes and non-ASCII characters are not safe in a download name.
    """
    safe_id = _UNSAFE_FILENAME_CHARS.sub("_", model_id).lstrip(".")[:_MAX_FILENAME_ID_LENGTH] or "model"
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return f"{safe_id}-{int(aware.timestamp() * 1000)}.json"


def share_payload(export_obj: dict[str, Any]) -> dict[str, Any]:
    """What Open WebUI's Share button posts: the community site's create page and the exported model."""
    return {"url": SHARE_URL, "model": export_obj}


# Built once, after the helpers they use are defined.
_META_EXPORT: Final = _exporter(ModelMeta)
_PARAMS_EXPORT: Final = _exporter(ModelParams)
