"""Stateless completions for the OpenAI-compatible API: the client sends the whole history, the gateway applies
the model file (system prompt, parameters, knowledge, vision check, context trimming) and streams the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from modelhub_chat_gateway.adapters.rag_client import RagClient
from modelhub_chat_gateway.domain.chat_types import Citation, PromptMessage, StreamChunk, ToolOptions
from modelhub_chat_gateway.domain.model import ResolvedModel
from modelhub_chat_gateway.domain.prompt import PromptUser
from modelhub_chat_gateway.errors import InvalidRequestError, VisionNotSupportedError
from modelhub_chat_gateway.service_layer.generation import Generator
from modelhub_chat_gateway.service_layer.model_catalog import Caller, ModelCatalog


@dataclass(frozen=True)
class PreparedCompletion:
    model: ResolvedModel
    messages: tuple[PromptMessage, ...]
    params: dict[str, Any]
    citations: tuple[Citation, ...]
    dropped_messages: int
    tools: ToolOptions = ToolOptions()


class CompletionService:
    def __init__(self, catalog: ModelCatalog, rag: RagClient, generator: Generator, rag_top_k: int) -> None:
        self._catalog = catalog
        self._rag = rag
        self._generator = generator
        self._top_k = rag_top_k

    async def prepare(
        self,
        caller: Caller,
        model_id: str,
        messages: Sequence[PromptMessage],
        overrides: dict[str, Any],
        tools: ToolOptions | None = None,
    ) -> PreparedCompletion:
        tools = tools or ToolOptions()
        if not messages:
            raise InvalidRequestError("messages: send at least one message")
        model = await self._catalog.resolve(model_id, caller)
        if any(m.images for m in messages) and not model.vision:
            raise VisionNotSupportedError(f"'{model_id}' cannot read images: it does not have the vision capability")
        self._generator.check_tools(model, tools)
        params = model.with_overrides(overrides)
        # The client's own system messages follow the model file's system prompt (Open WebUI's order).
        client_system = [m for m in messages if m.role == "system"]
        dialogue = [m for m in messages if m.role != "system"]
        if not dialogue:
            raise InvalidRequestError("messages: send at least one user message")
        current = dialogue[-1]
        citations: list[Citation] = []
        if model.knowledge_ids and current.role == "user" and current.content.strip():
            citations = await self._rag.retrieve(model.knowledge_ids, current.content, self._top_k, caller.token)
        fitted = self._generator.build_prompt(
            model,
            params,
            user=PromptUser(caller.principal.subject, caller.principal.role),
            history=dialogue[:-1],
            current=current,
            citations=citations,
            extra_system=client_system,
        )
        return PreparedCompletion(model, fitted.messages, params, tuple(citations), fitted.dropped_messages, tools)

    def stream(self, prepared: PreparedCompletion) -> AsyncIterator[StreamChunk]:
        return self._generator.stream(prepared.model, prepared.messages, prepared.params, prepared.tools)
