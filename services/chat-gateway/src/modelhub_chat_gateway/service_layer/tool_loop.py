"""The server-side tool loop: the model is offered its model file's tools (and the client's), every call of a
server-side tool is run here, its result fed back, and the model goes on, up to ``max_steps`` rounds of calls.

* Calls of one round run in parallel (at most ``max_parallel`` at once); each is bounded by its tool server's
  timeout and result size, and its arguments are checked against the tool's schema before anything is sent.
* A failing tool (an error, a timeout, bad arguments) is a result the model sees, never a failed answer.
* The client's own tools (OpenAI ``tools``) are offered too; a call of one of them ends the answer with
  ``finish_reason: tool_calls`` and goes back to the client, as the OpenAI API does. When a round holds both
  kinds, the server-side calls are run and their records kept, but the answer then ends with the client's calls
  (the model does not see the server-side results).
* ``tool_choice`` (the model file's parameter, or the request's) applies to the first round only; after it the
  model may call again if its backend can choose by itself, or else must answer in text. After the last allowed
  round the model is asked to answer without tools, with a warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from modelhub_chat_gateway.domain.chat_types import (
    BackendWarning,
    PromptMessage,
    StreamChunk,
    ToolCall,
    ToolOptions,
    Usage,
)
from modelhub_chat_gateway.domain.events import ToolCalled, ToolFinished
from modelhub_chat_gateway.domain.model import ResolvedModel
from modelhub_chat_gateway.domain.tools import Toolkit, ToolStepRecord
from modelhub_chat_gateway.errors import InvalidRequestError
from modelhub_chat_gateway.service_layer.generation import Generator
from modelhub_common.tools import McpSessionCache, ToolOutcome, call_tool

logger = logging.getLogger(__name__)

#: Model-file parameters the loop reads itself (they are not sampling parameters a backend understands).
TOOL_PARAMS = ("tool_choice", "parallel_tool_calls")


@dataclass(frozen=True)
class ToolLimits:
    max_steps: int
    max_parallel: int


#: What the loop yields besides the model's chunks: each server-side call when it starts and when it ends.
LoopItem = StreamChunk | ToolCalled | ToolFinished


def _tool_choice(params: Mapping[str, object]) -> tuple[str | None, str | None]:
    """(choice, forced function) from a model file's or request's ``tool_choice`` parameter."""
    value = params.get("tool_choice")
    if value is None or value == "":
        return None, None
    if isinstance(value, dict):
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return None, name
        raise InvalidRequestError(
            "params.tool_choice: an object must be {'type': 'function', 'function': {'name': ...}}"
        )
    if not isinstance(value, str):
        raise InvalidRequestError("params.tool_choice: 'auto', 'none', 'required' or the name of a tool")
    if value in ("auto", "none", "required"):
        return value, None
    return None, value


def plan_options(toolkit: Toolkit, client: ToolOptions, params: Mapping[str, object]) -> ToolOptions:
    """The tools and choice of the first round: the client's tools and the server-side ones, one list."""
    if not toolkit:
        return client
    names = {t.name for t in client.tools}
    clash = sorted(names.intersection(toolkit.tools))
    if clash:
        raise InvalidRequestError(
            f"tools: '{clash[0]}' is also a tool of this model's tool servers; give the client's tool another name"
        )
    choice, forced = client.choice, client.forced
    if choice is None and forced is None:
        choice, forced = _tool_choice(params)
    if forced is not None and forced not in names and forced not in toolkit:
        raise InvalidRequestError(f"tool_choice: '{forced}' is not one of the tools this model is offered")
    parallel = client.parallel
    if parallel is None and isinstance(params.get("parallel_tool_calls"), bool):
        parallel = bool(params["parallel_tool_calls"])
    return ToolOptions(
        tools=client.tools + toolkit.definitions(),
        choice=choice,
        forced=forced,
        parallel=parallel,
        response_format=client.response_format,
    )


def sampling_params(params: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in params.items() if k not in TOOL_PARAMS}


class ToolRunner:
    """Runs the server-side calls of one round."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        limits: ToolLimits,
        sessions: McpSessionCache | None = None,
        *,
        on_step: Callable[[ToolStepRecord], None] | None = None,
    ) -> None:
        self._http = http
        self._sessions = sessions
        self._on_step = on_step
        self.limits = limits
        self._slots = asyncio.Semaphore(max(limits.max_parallel, 1))

    async def run_one(self, toolkit: Toolkit, call: ToolCall, record: ToolStepRecord, caller_token: str) -> None:
        tool = toolkit.get(call.name)
        started = time.monotonic()
        if tool is None:
            outcome = ToolOutcome(False, f"there is no tool named '{call.name}'", 0.0, "unknown_tool")
        else:
            try:
                arguments: Any = json.loads(call.arguments or "{}")
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                outcome = ToolOutcome(
                    False,
                    "the arguments are not a JSON object; call the tool again with a JSON object",
                    0.0,
                    "invalid_arguments",
                )
            else:
                async with self._slots:
                    outcome = await call_tool(
                        tool.config,
                        tool.spec,
                        arguments,
                        caller_token=caller_token,
                        http=self._http,
                        sessions=self._sessions,
                    )
        record.ok, record.content = outcome.ok, outcome.content
        record.error_code = outcome.error_code or ""
        record.truncated = outcome.truncated
        record.duration_seconds = outcome.duration_seconds or (time.monotonic() - started)
        if self._on_step is not None:
            self._on_step(record)


async def stream_with_tools(
    generator: Generator,
    runner: ToolRunner | None,
    model: ResolvedModel,
    messages: Sequence[PromptMessage],
    params: Mapping[str, object],
    options: ToolOptions,
    toolkit: Toolkit,
    *,
    caller_token: str,
) -> AsyncGenerator[LoopItem, None]:
    """The model's chunks (text and warnings as they come; the last one carries the finish reason, the usage
    summed over every round and the client's tool calls, if any) with the server-side tool steps between them."""
    sampling = sampling_params(params)
    if runner is None or not toolkit:
        async for chunk in generator.stream(model, messages, sampling, options):
            yield chunk
        return
    conversation = list(messages)
    usage = Usage()
    step = 0
    current = options
    while True:
        calls: list[ToolCall] = []
        finish: str | None = None
        async for chunk in generator.stream(model, conversation, sampling, current):
            if chunk.usage is not None:
                usage = Usage(
                    usage.prompt_tokens + chunk.usage.prompt_tokens,
                    usage.completion_tokens + chunk.usage.completion_tokens,
                )
            calls.extend(chunk.tool_calls)
            finish = chunk.finish_reason or finish
            if chunk.text or chunk.warning is not None:
                yield StreamChunk(text=chunk.text, warning=chunk.warning)
        server_calls = [c for c in calls if c.name in toolkit]
        client_calls = tuple(c for c in calls if c.name not in toolkit)
        if server_calls:
            step += 1
            records = [
                ToolStepRecord(step, c.id, c.name, toolkit.tools[c.name].server_id, c.arguments) for c in server_calls
            ]
            for record in records:
                yield ToolCalled(model.id, replace(record))
            async for done in _run_round(runner, toolkit, server_calls, records, caller_token):
                yield ToolFinished(model.id, done)
            conversation.append(PromptMessage("assistant", "", tool_calls=tuple(server_calls)))
            conversation.extend(PromptMessage("tool", r.content, tool_call_id=r.call_id) for r in records)
        if client_calls or not server_calls:
            yield StreamChunk(
                finish_reason="tool_calls" if client_calls else (finish or "stop"),
                usage=usage,
                tool_calls=client_calls,
            )
            return
        current = _next_round(generator, model, options, step, runner.limits.max_steps)
        if current.choice == "none" and step >= runner.limits.max_steps:
            yield StreamChunk(
                warning=BackendWarning(
                    "tool_steps_exhausted",
                    f"'{model.id}' called tools {step} times, the most one answer may; it was asked to answer "
                    "with what it has",
                )
            )


async def _run_round(
    runner: ToolRunner,
    toolkit: Toolkit,
    calls: Sequence[ToolCall],
    records: Sequence[ToolStepRecord],
    caller_token: str,
) -> AsyncIterator[ToolStepRecord]:
    """Runs the calls in parallel; yields a copy of each record as its call ends (the fastest first)."""
    finished: asyncio.Queue[ToolStepRecord] = asyncio.Queue()

    async def run(call: ToolCall, record: ToolStepRecord) -> None:
        try:
            await runner.run_one(toolkit, call, record, caller_token)
        finally:
            finished.put_nowait(record)

    tasks = [asyncio.create_task(run(c, r)) for c, r in zip(calls, records, strict=True)]
    try:
        for _ in tasks:
            yield replace(await finished.get())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _next_round(
    generator: Generator, model: ResolvedModel, options: ToolOptions, step: int, max_steps: int
) -> ToolOptions:
    """After a round of calls: the same tools, chosen by the model if its backend can, else none."""
    if step >= max_steps:
        return replace(options, choice="none", forced=None)
    auto = replace(options, choice="auto", forced=None)
    if generator.unsupported(model, auto) is None:
        return auto
    return replace(options, choice="none", forced=None)
