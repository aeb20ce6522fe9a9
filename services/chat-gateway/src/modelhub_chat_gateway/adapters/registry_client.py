"""Reads model files, base models and connections from the registry's REST API.

Model files are read with the caller's own bearer token, so the registry's access rules decide what the
caller may use. Connections are admin-only: they are read with the gateway's service token, and so is
everything the model selector's catalog loads (every model file, hidden and disabled ones included, with its
access, and every base model, unavailable ones included), since the catalog filters per caller itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from modelhub_chat_gateway.errors import ModelNotFoundError, RegistryUnavailableError

logger = logging.getLogger(__name__)

_PAGE_LIMIT = 200


def _path_id(model_id: str) -> str:
    # Ids may contain "/" and ":" (the registry routes them as a path); everything else is escaped.
    return quote(model_id, safe="/:@")


class RegistryClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, service_token: Callable[[], str]) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._service_token = service_token

    async def _get(self, path: str, token: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self._http.get(
                f"{self._base}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(f"cannot reach the registry at {self._base}: {type(exc).__name__}") from exc

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code in (401, 403):
            raise RegistryUnavailableError(f"the registry refused to show {what} (HTTP {response.status_code})")
        if response.status_code != 200:
            raise RegistryUnavailableError(f"the registry answered HTTP {response.status_code} for {what}")
        try:
            body = response.json()
        except ValueError as exc:
            raise RegistryUnavailableError(f"the registry answered {what} with something that is not JSON") from exc
        if not isinstance(body, dict):
            raise RegistryUnavailableError(f"the registry answered {what} with an unexpected shape")
        return body

    async def model(self, model_id: str, token: str) -> dict[str, Any] | None:
        """The model file, or None if it does not exist or the caller cannot read it (the registry says 404)."""
        response = await self._get(f"/api/v1/models/{_path_id(model_id)}", token)
        if response.status_code == 404:
            return None
        return self._json(response, f"model '{model_id}'")

    async def effective(self, model_id: str, token: str) -> dict[str, Any]:
        response = await self._get(f"/api/v1/models/{_path_id(model_id)}/effective", token)
        if response.status_code == 404:
            raise ModelNotFoundError(f"model '{model_id}' does not exist or you cannot read it")
        return self._json(response, f"the effective settings of '{model_id}'")

    async def base_models(self, token: str) -> list[dict[str, Any]]:
        body = self._json(await self._get("/api/v1/base-models", token), "the base models")
        return [i for i in body.get("items", []) if isinstance(i, dict)]

    async def all_models(self, *, page_size: int = _PAGE_LIMIT) -> AsyncIterator[list[dict[str, Any]]]:
        """Every model file, a page at a time, as the service token (an admin) sees them."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"include_hidden": "true", "include_disabled": "true", "limit": page_size}
            if cursor:
                params["cursor"] = cursor
            response = await self._get("/api/v1/models", self._service_token(), params)
            body = self._json(response, "the model list")
            yield [i for i in body.get("items", []) if isinstance(i, dict)]
            cursor = body.get("next_cursor")
            if not cursor:
                return

    async def any_model(self, model_id: str) -> dict[str, Any] | None:
        """A model file as the service token sees it, or None when it does not exist."""
        response = await self._get(f"/api/v1/models/{_path_id(model_id)}", self._service_token())
        if response.status_code == 404:
            return None
        return self._json(response, f"model '{model_id}'")

    async def all_base_models(self) -> list[dict[str, Any]]:
        """Every base model, unavailable ones included (their ``available`` says so)."""
        response = await self._get("/api/v1/base-models", self._service_token(), {"include_unavailable": "true"})
        body = self._json(response, "the base models")
        return [i for i in body.get("items", []) if isinstance(i, dict)]

    async def connection_credentials(self, connection_id: str) -> dict[str, Any] | None:
        """URL and API key of a connection (needs the gateway's service token, an admin token)."""
        path = f"/api/v1/connections/{quote(connection_id, safe='')}/credentials"
        response = await self._get(path, self._service_token())
        if response.status_code == 404:
            return None
        return self._json(response, "the connection")

    async def tool_server(self, server_id: str, token: str) -> dict[str, Any] | None:
        """A tool server and its tools as the caller sees them, or None if it does not exist or the caller may
        not use it (the registry says 404)."""
        response = await self._get(f"/api/v1/tools/{quote(server_id, safe='')}", token)
        if response.status_code == 404:
            return None
        return self._json(response, f"tool server '{server_id}'")

    async def tool_server_credentials(self, server_id: str) -> dict[str, Any] | None:
        """Where a tool server is and how to authenticate to it (needs the gateway's service token)."""
        path = f"/api/v1/tool-servers/{quote(server_id, safe='')}/credentials"
        response = await self._get(path, self._service_token())
        if response.status_code == 404:
            return None
        return self._json(response, f"the credentials of tool server '{server_id}'")

    async def filter_configs(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The enabled filters among ``ids`` as the gateway runs them, webhook secrets included (the service
        token); in the order asked, unknown and disabled ids simply absent."""
        wanted = list(dict.fromkeys(i for i in ids if i))
        if not wanted:
            return []
        response = await self._get("/api/v1/filter-configs", self._service_token(), {"ids": ",".join(wanted)})
        body = self._json(response, "the filters")
        return [i for i in body.get("items", []) if isinstance(i, dict)]
