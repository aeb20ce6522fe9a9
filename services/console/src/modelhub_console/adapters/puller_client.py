"""The puller's REST API: start a pull and follow its progress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from modelhub_console.adapters.http_backend import RestBackend


class PullerClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.api = RestBackend(http, base_url, "puller")

    async def start(self, token: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("POST", "/api/v1/pulls", token, json={"model": name})
        return result

    async def get(self, token: str, pull_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.json("GET", f"/api/v1/pulls/{quote(pull_id, safe='')}", token)
        return result

    async def cancel(self, token: str, pull_id: str) -> dict[str, Any]:
        """Cancels the pull; its job as the puller then reports it (cancelling an ended pull changes nothing)."""
        result: dict[str, Any] = await self.api.json("DELETE", f"/api/v1/pulls/{quote(pull_id, safe='')}", token)
        return result

    def events(self, token: str, pull_id: str) -> AsyncIterator[str]:
        """The pull's server-sent event lines, relayed as they come."""
        return self.api.stream_lines(
            f"/api/v1/pulls/{quote(pull_id, safe='')}/events", token, accept="text/event-stream"
        )
