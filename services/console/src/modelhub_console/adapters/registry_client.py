"""The registry's REST API as the console uses it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from modelhub_console.adapters.http_backend import RestBackend
from modelhub_console.errors import BackendError


def _id(model_id: str) -> str:
    return quote(model_id, safe=":@/")


class RegistryClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.api = RestBackend(http, base_url, "registry")

    async def login(self, username: str, password: str) -> str:
        body = await self.api.json(
            "POST", "/api/v1/auth/login", None, json={"username": username, "password": password}
        )
        return str(body["token"])

    async def check_token(self, token: str) -> bool:
        """Whether the registry accepts the token (a one-item list costs next to nothing)."""
        response = await self.api.request("GET", "/api/v1/models", token, params={"limit": 1}, allow_401=True)
        return response.status_code != 401

    async def list_models(
        self,
        token: str,
        *,
        q: str | None = None,
        tag: str | None = None,
        include_hidden: bool = False,
        include_disabled: bool = False,
        limit: int = 24,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "limit": limit,
            "include_hidden": str(include_hidden).lower(),
            "include_disabled": str(include_disabled).lower(),
        }
        if q:
            params["q"] = q
        if tag:
            params["tag"] = tag
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = await self.api.json("GET", "/api/v1/models", token, params=params)
        return result

    async def get_model(self, token: str, model_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("GET", f"/api/v1/models/{_id(model_id)}", token)
        return result

    async def create_model(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("POST", "/api/v1/models", token, json=body)
        return result

    async def update_model(self, token: str, model_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json(
            "PATCH",
            f"/api/v1/models/{_id(model_id)}",
            token,
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return result

    async def set_access(
        self, token: str, model_id: str, access: dict[str, Any], *, version: int | None
    ) -> dict[str, Any]:
        """Replaces who may read and change the model (``{public_read, grants}``); ``version`` refuses a change
        made since it was read (409)."""
        headers = {"Content-Type": "application/merge-patch+json"}
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        result: dict[str, Any] = await self.api.json(
            "PATCH", f"/api/v1/models/{_id(model_id)}", token, json={"access": access}, headers=headers
        )
        return result

    async def directory(self, token: str) -> tuple[list[str], list[str]]:
        """User and group ids, for suggestions when granting access; only admins may list them, so anyone
        else gets two empty lists."""
        try:
            users = await self.api.json("GET", "/api/v1/users", token)
            groups = await self.api.json("GET", "/api/v1/groups", token)
        except BackendError as exc:
            if exc.status in (401, 403):
                return [], []
            raise
        return (
            sorted(str(u["id"]) for u in users.get("items", []) if "id" in u),
            sorted(str(g["id"]) for g in groups.get("items", []) if "id" in g),
        )

    async def clone_model(self, token: str, model_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("POST", f"/api/v1/models/{_id(model_id)}/clone", token)
        return result

    async def set_flag(self, token: str, model_id: str, action: str) -> dict[str, Any]:
        """``action``: hide, unhide, enable or disable."""
        result: dict[str, Any] = await self.api.json("POST", f"/api/v1/models/{_id(model_id)}/{action}", token)
        return result

    async def delete_model(self, token: str, model_id: str) -> None:
        await self.api.request("DELETE", f"/api/v1/models/{_id(model_id)}", token)

    async def put_avatar(self, token: str, model_id: str, data: bytes, content_type: str) -> None:
        await self.api.request(
            "PUT",
            f"/api/v1/models/{_id(model_id)}/avatar",
            token,
            files={"file": ("avatar", data, content_type)},
        )

    async def avatar(self, token: str, model_id: str) -> httpx.Response:
        return await self.api.request("GET", f"/api/v1/models/{_id(model_id)}/avatar", token)

    async def export_one(self, token: str, model_id: str) -> httpx.Response:
        return await self.api.request("GET", f"/api/v1/models/{_id(model_id)}/export", token)

    async def export_all(self, token: str) -> httpx.Response:
        return await self.api.request("GET", "/api/v1/models/export", token)

    async def import_models(self, token: str, data: bytes, *, dry_run: bool, mode: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json(
            "POST",
            "/api/v1/models/import",
            token,
            params={"dry_run": str(dry_run).lower(), "mode": mode},
            content=data,
            headers={"Content-Type": "application/json"},
        )
        return result

    async def effective(self, token: str, model_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("GET", f"/api/v1/models/{_id(model_id)}/effective", token)
        return result

    async def revisions(self, token: str, model_id: str) -> list[dict[str, Any]]:
        body = await self.api.json("GET", f"/api/v1/models/{_id(model_id)}/revisions", token)
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    async def restore(self, token: str, model_id: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json(
            "POST", f"/api/v1/models/{_id(model_id)}/revisions/{version}/restore", token
        )
        return result

    async def base_models(self, token: str) -> list[dict[str, Any]]:
        body = await self.api.json("GET", "/api/v1/base-models", token, params={"include_unavailable": "true"})
        items: list[dict[str, Any]] = body.get("items", [])
        return items
