"""A small typed client for the registry's REST API (``/api/v1``).

Every failure leaves this module as an :class:`ApiError` holding the server's message, the HTTP status and
a hint, so commands never see httpx exceptions or raw error bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from modelhub_cli.errors import ApiError
from modelhub_cli.hints import hint_for

__all__ = ["ApiError", "Download", "FlagAction", "JsonObject", "RegistryClient", "error_from_response", "model_path"]

JsonObject = dict[str, Any]
FlagAction = Literal["hide", "unhide", "enable", "disable"]

# Model ids keep "/" and ":" (``hf.co/user/repo:Q4_K_M``): the API declares them as path parameters.
# Everything else that means something in a URL ("?", "#", "%") is escaped.
_MODEL_ID_SAFE = ":@!$&'()*+,;="
_FILENAME_RE = re.compile(r'filename="?([^";]+)"?')


@dataclass(frozen=True)
class Download:
    """A file the registry sends as an attachment; ``filename`` is its suggested name, if any."""

    filename: str | None
    chunks: Iterator[bytes]


def attachment_filename(response: httpx.Response) -> str | None:
    match = _FILENAME_RE.search(response.headers.get("content-disposition", ""))
    return match.group(1) if match else None


def error_from_response(response: httpx.Response) -> ApiError:
    """Reads the ``{"error": {"code", "message", "details"}}`` shape, and copes with anything else."""
    status = response.status_code
    path = response.request.url.path
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or response.reason_phrase)
        return ApiError(
            message, status=status, code=code, details=error.get("details"), hint=hint_for(status, code, path)
        )
    # Not the registry's shape: a proxy, or a route that does not exist (FastAPI's own {"detail": ...}).
    detail = body.get("detail") if isinstance(body, dict) else None
    message = str(detail) if detail else (response.text.strip()[:300] or response.reason_phrase)
    return ApiError(message, status=status, hint=hint_for(status, "", path))


def _id_segment(segment: str) -> str:
    # httpx resolves "." and ".." segments as a browser would, so the id "../users" would reach /api/v1/users;
    # escaped dots are left alone by httpx and decoded back by the server.
    if segment in (".", ".."):
        return segment.replace(".", "%2E")
    return quote(segment, safe=_MODEL_ID_SAFE)


def model_path(model_id: str, suffix: str = "") -> str:
    return f"/api/v1/models/{'/'.join(_id_segment(s) for s in model_id.split('/'))}{suffix}"


def _segment(value: str) -> str:
    return quote(value, safe="")


def service_http(base_url: str, token: str, *, timeout: float, service: str, hint: str) -> httpx.Client:
    """An HTTP client for one modelhub service: the bearer token and the CLI's User-Agent on every request;
    a malformed URL is an :class:`ApiError` naming the ``service`` and what to set (``hint``)."""
    try:
        return httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "modelhub-cli"},
            timeout=timeout,
        )
    except (httpx.InvalidURL, ValueError) as exc:
        raise ApiError(f"the {service} URL {base_url!r} is not valid: {exc}", status=0, hint=hint) from exc


class RegistryClient:
    """One registry, one token. Use as a context manager so the connection pool is closed."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = service_http(
            base_url,
            token,
            timeout=timeout,
            service="registry",
            hint="set MODELHUB_REGISTRY_URL or --registry-url to e.g. http://127.0.0.1:8081",
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- transport

    def _unreachable(self, exc: httpx.HTTPError) -> ApiError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
        return ApiError(
            f"the registry at {self.base_url} {kind} ({type(exc).__name__}: {exc})",
            status=0,
            hint="start the stack with `make up` (`modelhub status` shows what runs), "
            "or point MODELHUB_REGISTRY_URL / --registry-url at a running registry",
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                f"the registry answered {method} {path} with something that is not JSON",
                status=response.status_code,
                hint="is MODELHUB_REGISTRY_URL the registry's URL and not another service's?",
            ) from exc

    def _object(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        body = self._json(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ApiError(f"the registry answered {method} {path} with an unexpected shape", status=200)
        return body

    def _items(self, path: str, **kwargs: Any) -> list[JsonObject]:
        items = self._object("GET", path, **kwargs).get("items", [])
        return [item for item in items if isinstance(item, dict)]

    # ---- model files

    def list_models(
        self,
        *,
        q: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        include_hidden: bool = False,
        include_disabled: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JsonObject:
        """One page: ``{"items": [...], "next_cursor": ...}``."""
        params: dict[str, str | int | bool] = {"include_hidden": include_hidden, "include_disabled": include_disabled}
        optional = {"q": q, "tag": tag, "owner": owner, "limit": limit, "cursor": cursor}
        params.update({key: value for key, value in optional.items() if value is not None})
        return self._object("GET", "/api/v1/models", params=params)

    def get_model(self, model_id: str) -> JsonObject:
        return self._object("GET", model_path(model_id))

    def create_model(self, body: JsonObject) -> JsonObject:
        return self._object("POST", "/api/v1/models", json=body)

    def update_model(self, model_id: str, patch: JsonObject, *, version: int | None = None) -> JsonObject:
        headers = {"If-Match": f'"{version}"'} if version is not None else {}
        return self._object("PATCH", model_path(model_id), json=patch, headers=headers)

    def delete_model(self, model_id: str) -> None:
        self.request("DELETE", model_path(model_id))

    def clone_model(self, model_id: str) -> JsonObject:
        return self._object("POST", model_path(model_id, "/clone"))

    def set_flag(self, model_id: str, action: FlagAction) -> JsonObject:
        return self._object("POST", model_path(model_id, f"/{action}"))

    def export_model(self, model_id: str) -> Download:
        response = self.request("GET", model_path(model_id, "/export"))
        return Download(attachment_filename(response), iter([response.content]))

    @contextmanager
    def export_all(self) -> Iterator[Download]:
        """Streams the array so a large registry does not have to fit in memory."""
        try:
            with self._http.stream("GET", "/api/v1/models/export") as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                yield Download(attachment_filename(response), response.iter_bytes())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def import_models(self, document: bytes, *, upsert: bool = False, dry_run: bool = False) -> JsonObject:
        params = {"mode": "upsert" if upsert else "create", "dry_run": dry_run}
        headers = {"Content-Type": "application/json"}
        return self._object("POST", "/api/v1/models/import", params=params, content=document, headers=headers)

    def share(self, model_id: str) -> JsonObject:
        return self._object("GET", model_path(model_id, "/share"))

    def set_avatar(self, model_id: str, filename: str, data: bytes, content_type: str) -> JsonObject:
        files = {"file": (filename, data, content_type)}
        return self._object("PUT", model_path(model_id, "/avatar"), files=files)

    def revisions(self, model_id: str) -> list[JsonObject]:
        return self._items(model_path(model_id, "/revisions"))

    def restore(self, model_id: str, version: int) -> JsonObject:
        return self._object("POST", model_path(model_id, f"/revisions/{version}/restore"))

    def effective(self, model_id: str) -> JsonObject:
        return self._object("GET", model_path(model_id, "/effective"))

    # ---- base models and connections

    def base_models(self, *, include_unavailable: bool = False) -> list[JsonObject]:
        return self._items("/api/v1/base-models", params={"include_unavailable": include_unavailable})

    def audit(self, **filters: Any) -> JsonObject:
        """One page of the audit log (admins only); ``filters``: actor, action, target, since, until, limit,
        cursor."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._object("GET", "/api/v1/audit", params=params)

    def connections(self) -> list[JsonObject]:
        return self._items("/api/v1/connections")

    def add_connection(
        self, *, type_: str, url: str, name: str | None = None, api_key: str | None = None
    ) -> JsonObject:
        body = {"type": type_, "url": url, "name": name, "api_key": api_key}
        return self._object("POST", "/api/v1/connections", json={k: v for k, v in body.items() if v is not None})

    def sync_connection(self, connection_id: str) -> JsonObject:
        return self._object("POST", f"/api/v1/connections/{_segment(connection_id)}/sync")

    def delete_connection(self, connection_id: str) -> None:
        self.request("DELETE", f"/api/v1/connections/{_segment(connection_id)}")

    # ---- tool servers

    def tool_servers(self) -> list[JsonObject]:
        return self._items("/api/v1/tool-servers")

    def add_tool_server(self, body: JsonObject) -> JsonObject:
        return self._object("POST", "/api/v1/tool-servers", json=body)

    def tool_server(self, server_id: str) -> JsonObject:
        return self._object("GET", f"/api/v1/tool-servers/{_segment(server_id)}")

    def refresh_tool_server(self, server_id: str) -> JsonObject:
        return self._object("POST", f"/api/v1/tool-servers/{_segment(server_id)}/refresh")

    def delete_tool_server(self, server_id: str) -> None:
        self.request("DELETE", f"/api/v1/tool-servers/{_segment(server_id)}")

    def usable_tools(self, server_id: str) -> JsonObject:
        return self._object("GET", f"/api/v1/tools/{_segment(server_id)}")

    # ---- filters

    def filters(self) -> list[JsonObject]:
        return self._items("/api/v1/filters")

    def add_filter(self, body: JsonObject) -> JsonObject:
        return self._object("POST", "/api/v1/filters", json=body)

    def filter(self, filter_id: str) -> JsonObject:
        return self._object("GET", f"/api/v1/filters/{_segment(filter_id)}")

    def delete_filter(self, filter_id: str) -> None:
        self.request("DELETE", f"/api/v1/filters/{_segment(filter_id)}")

    # ---- users, groups, tokens

    def users(self) -> list[JsonObject]:
        return self._items("/api/v1/users")

    def add_user(self, user_id: str, *, name: str, email: str | None = None, admin: bool = False) -> JsonObject:
        body: JsonObject = {"id": user_id, "name": name, "role": "admin" if admin else "user"}
        if email is not None:
            body["email"] = email
        return self._object("POST", "/api/v1/users", json=body)

    def delete_user(self, user_id: str) -> None:
        self.request("DELETE", f"/api/v1/users/{_segment(user_id)}")

    def set_password(self, user_id: str, password: str) -> None:
        self.request("PUT", f"/api/v1/users/{_segment(user_id)}/password", json={"password": password})

    def groups(self) -> list[JsonObject]:
        return self._items("/api/v1/groups")

    def add_group(self, group_id: str, *, name: str) -> JsonObject:
        return self._object("POST", "/api/v1/groups", json={"id": group_id, "name": name})

    def delete_group(self, group_id: str) -> None:
        self.request("DELETE", f"/api/v1/groups/{_segment(group_id)}")

    def add_member(self, group_id: str, user_id: str) -> None:
        self.request("PUT", f"/api/v1/groups/{_segment(group_id)}/members/{_segment(user_id)}")

    def remove_member(self, group_id: str, user_id: str) -> None:
        self.request("DELETE", f"/api/v1/groups/{_segment(group_id)}/members/{_segment(user_id)}")

    def issue_token(self, user_id: str, *, ttl_seconds: int | None = None) -> JsonObject:
        body: JsonObject = {"user_id": user_id}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return self._object("POST", "/api/v1/tokens", json=body)
