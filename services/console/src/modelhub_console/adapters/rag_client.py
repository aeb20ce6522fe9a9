"""The rag service's REST API: knowledge collections, their files and a query with citations."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from modelhub_console.adapters.http_backend import RestBackend


def _path(*ids: str) -> str:
    return "".join("/" + quote(part, safe="") for part in ids)


class RagClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.api = RestBackend(http, base_url, "knowledge service")

    async def list_collections(self, token: str) -> list[dict[str, Any]]:
        body = await self.api.json("GET", "/api/v1/knowledge", token)
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    async def create_collection(self, token: str, *, name: str, description: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json(
            "POST", "/api/v1/knowledge", token, json={"name": name, "description": description}
        )
        return result

    async def get_collection(self, token: str, knowledge_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("GET", "/api/v1/knowledge" + _path(knowledge_id), token)
        return result

    async def set_access(
        self, token: str, knowledge_id: str, *, public_read: bool, grants: list[dict[str, str]], version: int | None
    ) -> dict[str, Any]:
        """Replaces who may read and change the collection (owner and admins only); ``version`` refuses a change
        made since it was read (409)."""
        headers = {"If-Match": f'"{version}"'} if version is not None else {}
        result: dict[str, Any] = await self.api.json(
            "PATCH",
            "/api/v1/knowledge" + _path(knowledge_id),
            token,
            json={"public_read": public_read, "grants": grants},
            headers=headers,
        )
        return result

    async def delete_collection(self, token: str, knowledge_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("DELETE", "/api/v1/knowledge" + _path(knowledge_id), token)
        return result

    async def list_files(self, token: str, knowledge_id: str) -> list[dict[str, Any]]:
        body = await self.api.json("GET", "/api/v1/knowledge" + _path(knowledge_id) + "/files", token)
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    async def upload_file(
        self, token: str, knowledge_id: str, *, filename: str, data: bytes, content_type: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json(
            "POST",
            "/api/v1/knowledge" + _path(knowledge_id) + "/files",
            token,
            files={"file": (filename, data, content_type)},
        )
        return result

    async def delete_file(self, token: str, knowledge_id: str, file_id: str) -> None:
        await self.api.request("DELETE", "/api/v1/knowledge" + _path(knowledge_id, "files", file_id), token)

    async def query(self, token: str, knowledge_id: str, query: str, *, k: int) -> list[dict[str, Any]]:
        body = await self.api.json(
            "POST", "/api/v1/knowledge" + _path(knowledge_id) + "/query", token, json={"query": query, "k": k}
        )
        results: list[dict[str, Any]] = body.get("results", [])
        return results
