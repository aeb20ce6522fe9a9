"""OpenAI-compatible ``POST /v1/chat/completions`` with ``stream: true`` (server-sent events)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from modelhub_chat_gateway.adapters.backends.base import data_url
from modelhub_chat_gateway.adapters.backends.http_stream import StreamingHttpClient
from modelhub_chat_gateway.domain.chat_types import BackendRequest, StreamChunk, Usage
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.domain.params import to_openai_fields
from modelhub_chat_gateway.errors import BackendError


def chat_url(base: str) -> str:
    base = base.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _message(role: str, content: str, images: list[str]) -> dict[str, Any]:
    if not images:
        return {"role": role, "content": content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": content}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in images)
    return {"role": role, "content": parts}


class OpenAICompatBackend:
    def __init__(self, http: StreamingHttpClient) -> None:
        self._http = http

    async def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        if not location.url:
            raise BackendError(f"no URL is known for '{request.model}'", code="backend_unavailable")
        url = chat_url(location.url)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m.role, m.content, [data_url(i) for i in m.images]) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **to_openai_fields(request.params),
        }
        finish: str | None = None
        usage: Usage | None = None
        async with self._http.post_lines(url, body, location.api_key) as lines:
            async for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    yield StreamChunk(finish_reason=finish or "stop", usage=usage)
                    return
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise BackendError(f"{url} sent an event that is not JSON", code="backend_error") from exc
                if chunk.get("error"):
                    error = chunk["error"]
                    text = error.get("message") if isinstance(error, dict) else error
                    raise BackendError(f"the server failed mid-answer: {text}", code="backend_error")
                if isinstance(chunk.get("usage"), dict):
                    u = chunk["usage"]
                    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield StreamChunk(content)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        if finish is None:
            raise BackendError(f"{url} ended the stream without finishing the answer", code="backend_error")
        yield StreamChunk(finish_reason=finish, usage=usage)
