"""OpenAI-compatible ``POST /v1/chat/completions`` with ``stream: true`` (server-sent events)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from modelhub_chat_gateway.adapters.backends.base import data_url
from modelhub_chat_gateway.adapters.backends.http_stream import StreamingHttpClient
from modelhub_chat_gateway.domain.chat_types import (
    BackendRequest,
    PromptMessage,
    StreamChunk,
    ToolCall,
    ToolOptions,
    Usage,
)
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.domain.params import to_openai_fields
from modelhub_chat_gateway.errors import BackendError


def chat_url(base: str) -> str:
    base = base.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _message(message: PromptMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ],
        }
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    parts.extend({"type": "image_url", "image_url": {"url": data_url(i)}} for i in message.images)
    return {"role": message.role, "content": parts}


def tool_fields(options: ToolOptions) -> dict[str, Any]:
    """OpenAI's ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` for ``options``."""
    fields: dict[str, Any] = {}
    if options.active:
        fields["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in options.active
        ]
        if options.forced:
            fields["tool_choice"] = {"type": "function", "function": {"name": options.forced}}
        elif options.choice:
            fields["tool_choice"] = options.choice
        if options.parallel is not None:
            fields["parallel_tool_calls"] = options.parallel
    if options.response_format is not None:
        fields["response_format"] = options.response_format
    return fields


class _ToolCallFragments:
    """Gathers streamed ``delta.tool_calls`` fragments (by index) into whole calls."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, fragments: list[Any]) -> None:
        for n, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index", n)
            call = self._calls.setdefault(int(index), {"id": "", "name": "", "arguments": ""})
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["name"] = call["name"] or str(function.get("name") or "")
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call["arguments"] += arguments
            elif isinstance(arguments, dict):  # some servers send the object itself
                call["arguments"] += json.dumps(arguments)

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(c["id"] or f"call_{uuid.uuid4().hex[:24]}", c["name"], c["arguments"] or "{}")
            for _, c in sorted(self._calls.items())
            if c["name"]
        )


class OpenAICompatBackend:
    def __init__(self, http: StreamingHttpClient) -> None:
        self._http = http

    def unsupported(self, options: ToolOptions) -> str | None:
        """Every field is passed through: the upstream itself says what it cannot do."""
        return None

    async def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        if not location.url:
            raise BackendError(f"no URL is known for '{request.model}'", code="backend_unavailable")
        url = chat_url(location.url)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **to_openai_fields(request.params),
            **tool_fields(request.tools),
        }
        fragments = _ToolCallFragments()
        finish: str | None = None
        usage: Usage | None = None
        async with self._http.post_lines(url, body, location.api_key) as lines:
            async for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    if calls := fragments.calls():
                        yield StreamChunk(tool_calls=calls)
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
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        yield StreamChunk(content)
                    if isinstance(delta.get("tool_calls"), list):
                        fragments.add(delta["tool_calls"])
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        if finish is None:
            raise BackendError(f"{url} ended the stream without finishing the answer", code="backend_error")
        if calls := fragments.calls():
            yield StreamChunk(tool_calls=calls)
        yield StreamChunk(finish_reason=finish, usage=usage)
