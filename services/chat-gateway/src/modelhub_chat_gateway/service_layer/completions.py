"""Stateless completions for the OpenAI-compatible API: the client sends the whole history, the gateway applies
the model file (system prompt, parameters, knowledge, vision check, context trimming) and streams the answer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from modelhub_chat_gateway.adapters.rag_client import RagClient
from modelhub_chat_gateway.domain.chat_types import (
    BackendWarning,
    Citation,
    PromptMessage,
    StreamChunk,
    ToolOptions,
    Usage,
)
from modelhub_chat_gateway.domain.events import ToolFinished
from modelhub_chat_gateway.domain.model import ResolvedModel
from modelhub_chat_gateway.domain.prompt import PromptUser
from modelhub_chat_gateway.domain.tools import Toolkit
from modelhub_chat_gateway.errors import FilterFailedError, InvalidRequestError, VisionNotSupportedError
from modelhub_chat_gateway.metrics import GatewayMetrics
from modelhub_chat_gateway.service_layer.filter_directory import FilterDirectory, ModelFilters, redacted
from modelhub_chat_gateway.service_layer.filters import FilterRunner
from modelhub_chat_gateway.service_layer.generation import Generator
from modelhub_chat_gateway.service_layer.model_catalog import Caller, ModelCatalog
from modelhub_chat_gateway.service_layer.tool_directory import ToolDirectory
from modelhub_chat_gateway.service_layer.tool_loop import ToolRunner, plan_options, stream_with_tools


@dataclass(frozen=True)
class PreparedCompletion:
    model: ResolvedModel
    messages: tuple[PromptMessage, ...]
    params: dict[str, Any]
    citations: tuple[Citation, ...]
    dropped_messages: int
    tools: ToolOptions = ToolOptions()
    #: The model file's server-side tools (run by the gateway; the client never sees their calls).
    toolkit: Toolkit = Toolkit()
    caller_token: str = ""
    #: What the caller should hear before the answer: tools or filters that could not be used, filter notices.
    warnings: tuple[BackendWarning, ...] = ()
    filters: ModelFilters = ModelFilters()
    user_id: str = ""


class CompletionService:
    def __init__(
        self,
        catalog: ModelCatalog,
        rag: RagClient,
        generator: Generator,
        rag_top_k: int,
        *,
        tools: ToolDirectory | None = None,
        runner: ToolRunner | None = None,
        filters: FilterDirectory | None = None,
        filter_runner: FilterRunner | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._catalog = catalog
        self._rag = rag
        self._generator = generator
        self._top_k = rag_top_k
        self._tools = tools
        self._runner = runner
        self._filters = filters
        self._filter_runner = filter_runner

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
        params = model.with_overrides(overrides)
        toolkit = Toolkit()
        warnings: tuple[BackendWarning, ...] = ()
        if model.tool_ids and self._tools is not None and self._runner is not None:
            resolved = await self._tools.resolve(model.tool_ids, caller)
            toolkit, warnings = resolved.toolkit, resolved.warnings
            tools = plan_options(toolkit, tools, params)
        self._generator.check_tools(model, tools)
        # The client's own system messages follow the model file's system prompt (Open WebUI's order).
        client_system = [m for m in messages if m.role == "system"]
        dialogue = [m for m in messages if m.role != "system"]
        if not dialogue:
            raise InvalidRequestError("messages: send at least one user message")
        current = dialogue[-1]
        filters = ModelFilters()
        if model.filter_ids:
            if self._filters is None or self._filter_runner is None:
                raise FilterFailedError(
                    f"'{model.id}' has filters, but this gateway runs none; it does not answer without them",
                    filter_id=model.filter_ids[0],
                    stage="inlet",
                )
            filters = await self._filters.for_ids(model.filter_ids)
            warnings += filters.warnings
            if current.role == "user" and filters.any_for("inlet"):
                text, notices = await self._filter_runner.run(
                    "inlet", filters.specs, current.content, model_id=model.id, user_id=caller.principal.subject
                )
                warnings += tuple(BackendWarning(n.code, n.message) for n in notices)
                current = replace(current, content=text)
            dialogue = [*redacted(dialogue[:-1], filters), current]
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
        return PreparedCompletion(
            model,
            fitted.messages,
            params,
            tuple(citations),
            fitted.dropped_messages,
            tools,
            toolkit=toolkit,
            caller_token=caller.token,
            warnings=tuple(warnings),
            filters=filters,
            user_id=caller.principal.subject,
        )

    async def stream(self, prepared: PreparedCompletion) -> AsyncIterator[StreamChunk]:
        """The answer's chunks; server-side tool steps run inside and are not shown (OpenAI has no place for
        them), except that each one that fails is said as a warning. The answer is counted in the gateway's
        per-answer metrics (time to first token, total time, tokens) as a gRPC answer is."""
        started = time.monotonic()
        first: float | None = None
        usage: Usage | None = None
        finished = False
        backend = prepared.model.location.backend
        try:
            async for chunk in self._answer(prepared):
                if first is None and (chunk.text or chunk.tool_calls):
                    first = time.monotonic() - started
                usage = chunk.usage or usage
                finished = finished or chunk.finish_reason is not None
                yield chunk
        except Exception:
            if self._metrics is not None:
                self._metrics.record_failed_answer(backend)
            raise
        if self._metrics is not None and finished:
            self._metrics.record_answer(
                backend,
                ttft=first or 0.0,
                total=time.monotonic() - started,
                prompt=usage.prompt_tokens if usage else 0,
                completion=usage.completion_tokens if usage else 0,
            )

    async def _answer(self, prepared: PreparedCompletion) -> AsyncIterator[StreamChunk]:
        for warning in prepared.warnings:
            yield StreamChunk(warning=warning)
        items = stream_with_tools(
            self._generator,
            self._runner,
            prepared.model,
            prepared.messages,
            prepared.params,
            prepared.tools,
            prepared.toolkit,
            caller_token=prepared.caller_token,
        )
        # With outlet filters the answer is held back until it is whole (the client never sees unfiltered text).
        hold = prepared.filters.any_for("outlet") and self._filter_runner is not None
        held: list[str] = []
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, StreamChunk):
                    if hold and item.text:
                        held.append(item.text)
                        item = replace(item, text="")
                        if item == StreamChunk():
                            continue
                    if hold and item.finish_reason is not None and held and self._filter_runner is not None:
                        text, notices = await self._filter_runner.run(
                            "outlet",
                            prepared.filters.specs,
                            "".join(held),
                            model_id=prepared.model.id,
                            user_id=prepared.user_id,
                        )
                        for notice in notices:
                            yield StreamChunk(warning=BackendWarning(notice.code, notice.message))
                        item = replace(item, text=text)
                    yield item
                elif isinstance(item, ToolFinished) and not item.step.ok:
                    step = item.step
                    yield StreamChunk(
                        warning=BackendWarning(
                            "tool_failed", f"tool '{step.tool}' ({step.error_code}): {step.content[:300]}"
                        )
                    )
