"""Streams one answer from a backend with the gateway's timeouts, and builds the prompt a model is sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from modelhub_chat_gateway.adapters.backends.base import ChatBackend
from modelhub_chat_gateway.domain.chat_types import (
    BackendRequest,
    BackendWarning,
    Citation,
    PromptMessage,
    StreamChunk,
    ToolOptions,
)
from modelhub_chat_gateway.domain.model import ResolvedModel
from modelhub_chat_gateway.domain.params import int_param
from modelhub_chat_gateway.domain.prompt import FittedPrompt, PromptUser, fit_to_context, knowledge_block, render_system
from modelhub_chat_gateway.errors import BackendError, BackendTimeoutError, InvalidRequestError
from modelhub_common import tracing

#: Said when an answer ends without any text, so an empty answer is never mistaken for a silent success.
EMPTY_ANSWER = BackendWarning(
    "empty_answer",
    "the model produced no output: it ended its answer at once. Try again with another wording, a higher "
    "temperature, or another model.",
)


@dataclass(frozen=True)
class Timeouts:
    first_token: float
    idle: float


@dataclass(frozen=True)
class ContextDefaults:
    num_ctx: int
    max_tokens: int


class Generator:
    """The one place answers are streamed from backends, for gRPC turns and the OpenAI-compatible API alike."""

    def __init__(self, backends: Mapping[str, ChatBackend], timeouts: Timeouts, defaults: ContextDefaults) -> None:
        self._backends = dict(backends)
        self._timeouts = timeouts
        self._defaults = defaults

    def build_prompt(
        self,
        model: ResolvedModel,
        params: Mapping[str, object],
        *,
        user: PromptUser,
        history: Sequence[PromptMessage],
        current: PromptMessage,
        citations: Sequence[Citation] = (),
        extra_system: Sequence[PromptMessage] = (),
        now: datetime | None = None,
    ) -> FittedPrompt:
        """System prompt (rendered) and retrieved knowledge first, then history trimmed to fit, then ``current``."""
        parts: list[str] = []
        if model.system_template:
            parts.append(render_system(model.system_template, user, now or datetime.now(UTC)))
        if citations:
            parts.append(knowledge_block(citations))
        system = [PromptMessage("system", "\n\n".join(parts))] if parts else []
        system.extend(extra_system)
        num_ctx = int_param(params, "num_ctx") or self._defaults.num_ctx
        reserve = int_param(params, "max_tokens") or int_param(params, "num_predict") or self._defaults.max_tokens
        return fit_to_context(system, history, current, num_ctx=num_ctx, reserve_for_answer=reserve)

    def unsupported(self, model: ResolvedModel, tools: ToolOptions) -> str | None:
        """What of ``tools`` the backend ``model`` runs on cannot do, or None."""
        backend = self._backends.get(model.location.backend)
        return backend.unsupported(tools) if backend is not None else None

    def check_tools(self, model: ResolvedModel, tools: ToolOptions) -> None:
        """Raises :class:`InvalidRequestError` naming the parameter when ``model``'s backend cannot do what
        ``tools`` asks (before anything is streamed, so an HTTP client gets a 400)."""
        problem = self.unsupported(model, tools)
        if problem:
            raise InvalidRequestError(f"{problem} ('{model.id}' runs on the {model.location.backend} backend)")

    async def stream(
        self,
        model: ResolvedModel,
        messages: Sequence[PromptMessage],
        params: Mapping[str, object],
        tools: ToolOptions | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yields the backend's chunks; raises :class:`BackendTimeoutError` when the first token or the next one
        is late. Closing this iterator closes the backend's stream (and its upstream connection) at once."""
        backend = self._backends.get(model.location.backend)
        if backend is None:
            raise BackendError(f"no {model.location.backend} backend is configured", code="backend_unavailable")
        request = BackendRequest(model.location.upstream_model, tuple(messages), dict(params), tools or ToolOptions())
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self._timeouts.first_token
        got_text = False
        # The backend call's span is current only while the backend is being waited for (an HTTP backend
        # sends it on as traceparent), never in our caller between chunks.
        span = tracing.start_client_span(
            f"chat {model.location.backend}",
            **{"gen_ai.request.model": model.location.upstream_model, "modelhub.backend": model.location.backend},
        )
        try:
            async with contextlib.aclosing(backend.stream(request, model.location)) as chunks:
                iterator = aiter(chunks)
                while True:
                    # The timeout covers only the wait for the backend, never the time our caller takes.
                    limit = self._timeouts.idle if got_text else max(first_deadline - loop.time(), 0.0)
                    try:
                        with tracing.span_in_context(span):
                            async with asyncio.timeout(limit):
                                chunk = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    except TimeoutError as exc:
                        if got_text:
                            raise BackendTimeoutError(
                                f"'{model.id}' sent nothing for {self._timeouts.idle:g} s in the middle of its answer",
                                code="idle_timeout",
                            ) from exc
                        raise BackendTimeoutError(
                            f"'{model.id}' sent no first token within {self._timeouts.first_token:g} s",
                            code="first_token_timeout",
                        ) from exc
                    got_text = got_text or bool(chunk.text) or bool(chunk.tool_calls)
                    yield chunk
        except BaseException as exc:
            if span is not None and not isinstance(exc, GeneratorExit | asyncio.CancelledError):
                span.record_exception(exc)
                tracing.mark_failed(span, type(exc).__name__)
            raise
        finally:
            if span is not None:
                span.end()
