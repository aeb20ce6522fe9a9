"""An Ollama server's HTTP API (PROTOCOLS.md §4): the streaming ``/api/pull`` and ``/api/show``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelhub_puller.errors import ModelNotFoundError, UpstreamError, UpstreamRejectedError


class OllamaClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    async def pull(self, model: str, *, insecure: bool) -> AsyncIterator[dict[str, Any]]:
        """Yields the NDJSON progress lines of ``POST /api/pull``; leaving early closes the upstream stream,
        which makes Ollama stop the download."""
        body = {"model": model, "stream": True, "insecure": insecure}
        try:
            async with self._http.stream("POST", f"{self._base}/api/pull", json=body) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode("utf-8", "replace")
                    raise _failure(response.status_code, text, model)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError as exc:
                        raise UpstreamError(f"Ollama sent a line that is not JSON: {line[:100]!r}") from exc
                    if isinstance(item, dict):
                        if isinstance(item.get("error"), str):
                            raise UpstreamRejectedError(f"Ollama failed to pull {model}: {item['error']}")
                        yield item
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach Ollama at {self._base}: {type(exc).__name__}: {exc}") from exc

    async def show(self, model: str) -> dict[str, Any]:
        try:
            response = await self._http.post(f"{self._base}/api/show", json={"model": model})
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach Ollama at {self._base}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise _failure(response.status_code, response.text, model)
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError("Ollama's /api/show answer is not JSON") from exc
        return body if isinstance(body, dict) else {}


def _failure(status: int, text: str, model: str) -> UpstreamError | UpstreamRejectedError | ModelNotFoundError:
    try:
        message = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        message = text
    message = str(message).strip()[:300]
    if status == 404:
        return ModelNotFoundError(f"Ollama: {model}: {message or 'not found'}")
    if status in (400, 422):
        return UpstreamRejectedError(f"Ollama refused to pull {model}: {message}")
    return UpstreamError(f"Ollama answered HTTP {status}: {message}")
