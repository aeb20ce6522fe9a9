"""A turn: the user's message fanned out to one or two models, streamed concurrently, stored as a tree.

``start_turn`` / ``start_regeneration`` check everything that should refuse the whole call (bad input, a model
that does not exist, is disabled or has an unreadable base) before anything is stored. ``run`` then streams:
each model answers in its own task, so one model failing or being slow never blocks the other; their events
are interleaved as they come. The rows of the turn are written while the models already work, so storing
adds nothing to the time to first token; each answer's final state is written when it ends, including
partial answers of cancelled turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelhub_chat_gateway.adapters.conversation_repository import ConversationRepository
from modelhub_chat_gateway.adapters.image_store import ImageStore
from modelhub_chat_gateway.adapters.rag_client import RagClient
from modelhub_chat_gateway.domain import events as ev
from modelhub_chat_gateway.domain.chat_types import (
    Citation,
    ContextMode,
    ImageData,
    PromptMessage,
    Role,
    ToolCall,
    ToolOptions,
)
from modelhub_chat_gateway.domain.conversation import (
    ConversationRecord,
    MessageTree,
    StoredMessage,
    history_for,
    title_from,
)
from modelhub_chat_gateway.domain.model import ResolvedModel
from modelhub_chat_gateway.domain.prompt import PromptUser
from modelhub_chat_gateway.domain.tools import Toolkit, ToolStepRecord, split_action, text_parameter
from modelhub_chat_gateway.errors import (
    ConversationNotFoundError,
    FilterFailedError,
    GatewayError,
    InvalidRequestError,
    VisionNotSupportedError,
)
from modelhub_chat_gateway.service_layer.filter_directory import FilterDirectory, ModelFilters, redacted
from modelhub_chat_gateway.service_layer.filters import FilterRunner, Stage
from modelhub_chat_gateway.service_layer.generation import EMPTY_ANSWER, Generator
from modelhub_chat_gateway.service_layer.model_catalog import Caller, ModelCatalog
from modelhub_chat_gateway.service_layer.tool_directory import ToolDirectory
from modelhub_chat_gateway.service_layer.tool_loop import ToolRunner, plan_options, stream_with_tools
from modelhub_common import tracing
from modelhub_common.errors import ModelhubError

logger = logging.getLogger(__name__)

_STORE_DELAY_SECONDS = 0.25


@dataclass(frozen=True)
class TurnLimits:
    max_models: int
    max_image_bytes: int
    rag_top_k: int


@dataclass(frozen=True)
class TurnRequest:
    models: Sequence[str]
    text: str
    images: Sequence[ImageData] = ()
    conversation_id: str = ""
    parent_message_id: str = ""
    context_mode: ContextMode = ContextMode.SHARED
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    caller: Caller
    conversation: ConversationRecord
    is_new_conversation: bool
    tree: MessageTree
    user_message: StoredMessage
    user_images: list[ImageData]
    new_user_message: bool
    models: list[ResolvedModel]
    answer_ids: list[str]
    mode: ContextMode
    overrides: dict[str, Any]
    #: The selected answer before a regeneration, restored if the new answer fails.
    previous_current: str | None = None


def _new_id() -> str:
    return str(uuid.uuid4())


class ChatService:
    def __init__(
        self,
        *,
        repository: ConversationRepository,
        catalog: ModelCatalog,
        images: ImageStore,
        rag: RagClient,
        generator: Generator,
        limits: TurnLimits,
        tools: ToolDirectory | None = None,
        runner: ToolRunner | None = None,
        filters: FilterDirectory | None = None,
        filter_runner: FilterRunner | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repo = repository
        self._catalog = catalog
        self._images = images
        self._rag = rag
        self._generator = generator
        self._limits = limits
        self._tools = tools
        self._runner = runner
        self._filters = filters
        self._filter_runner = filter_runner
        self._clock = clock

    # ---- starting

    async def _resolve_all(self, model_ids: Sequence[str], caller: Caller) -> list[ResolvedModel]:
        # Usually every model is cached: then no task is started, and the turn starts without yielding to
        # the event loop (under load every trip through the loop's queue adds to the time to first token).
        cached = [self._catalog.cached(m, caller) for m in model_ids]
        if all(cached):
            return [m for m in cached if m is not None]
        results = await asyncio.gather(*(self._catalog.resolve(m, caller) for m in model_ids), return_exceptions=True)
        for result in results:  # the first model's problem first
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, ResolvedModel)]

    def _check_request(self, request: TurnRequest) -> None:
        models = [m.strip() for m in request.models]
        if not models:
            raise InvalidRequestError("models: name at least one model")
        if len(models) > self._limits.max_models:
            raise InvalidRequestError(
                f"models: at most {self._limits.max_models} models may answer one turn, not {len(models)}"
            )
        if any(not m for m in models):
            raise InvalidRequestError("models: a model id is empty")
        if len(set(models)) != len(models):
            raise InvalidRequestError("models: each model may appear once per turn")
        if not request.text.strip() and not request.images:
            raise InvalidRequestError("message: send text, images or both")
        for n, image in enumerate(request.images):
            if len(image.data) > self._limits.max_image_bytes:
                raise InvalidRequestError(
                    f"message.images[{n}]: {len(image.data)} bytes; the limit is {self._limits.max_image_bytes}"
                )
            if not image.mime_type.startswith("image/"):
                raise InvalidRequestError(f"message.images[{n}]: mime_type must be image/..., not {image.mime_type!r}")

    async def _load(self, conversation_id: str, caller: Caller) -> tuple[ConversationRecord, MessageTree]:
        found = await self._repo.get(conversation_id, caller.principal.subject)
        if found is None:
            raise ConversationNotFoundError(f"conversation '{conversation_id}' does not exist")
        record, messages = found
        return record, MessageTree(messages)

    async def start_turn(self, caller: Caller, request: TurnRequest) -> Turn:
        self._check_request(request)
        models = await self._resolve_all([m.strip() for m in request.models], caller)
        now = self._clock()
        if request.conversation_id:
            conversation, tree = await self._load(request.conversation_id, caller)
            is_new = False
            parent = request.parent_message_id or conversation.current_message_id
            if parent is not None and parent not in tree:
                raise InvalidRequestError(f"parent_message_id: '{parent}' is not a message of this conversation")
        else:
            if request.parent_message_id:
                raise InvalidRequestError("parent_message_id: a new conversation has no messages to continue from")
            conversation = ConversationRecord(
                _new_id(), caller.principal.subject, title_from(request.text), None, now, now
            )
            tree, is_new, parent = MessageTree([]), True, None
        user_message = StoredMessage(
            id=_new_id(),
            conversation_id=conversation.id,
            parent_id=parent,
            role="user",
            content=request.text,
            status="done",
            context_mode=request.context_mode,
        )
        return Turn(
            caller=caller,
            conversation=conversation,
            is_new_conversation=is_new,
            tree=tree,
            user_message=user_message,
            user_images=list(request.images),
            new_user_message=True,
            models=models,
            answer_ids=[_new_id() for _ in models],
            mode=request.context_mode,
            overrides=dict(request.overrides),
        )

    async def start_regeneration(
        self,
        caller: Caller,
        conversation_id: str,
        message_id: str,
        overrides: dict[str, Any],
        mode: ContextMode | None,
    ) -> Turn:
        conversation, tree = await self._load(conversation_id, caller)
        answer = tree.by_id.get(message_id)
        if answer is None or answer.role != "assistant" or answer.parent_id is None:
            raise InvalidRequestError(f"message_id: '{message_id}' is not an answer in this conversation")
        user_message = tree.by_id[answer.parent_id]
        model = (await self._resolve_all([answer.model_id], caller))[0]
        return Turn(
            caller=caller,
            conversation=conversation,
            is_new_conversation=False,
            tree=tree,
            user_message=user_message,
            user_images=await self._images.get(user_message.images) if user_message.images else [],
            new_user_message=False,
            models=[model],
            answer_ids=[_new_id()],
            mode=mode or user_message.context_mode,
            overrides=dict(overrides),
            previous_current=conversation.current_message_id,
        )

    # ---- running

    async def _store_turn(self, turn: Turn, first_output: asyncio.Event) -> None:
        # The rows are written once the first output has been sent to the client (or after a short wait), so
        # that the database work never sits between the user's message and the first token.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STORE_DELAY_SECONDS):
                await first_output.wait()
        answers = [
            StoredMessage(
                id=answer_id,
                conversation_id=turn.conversation.id,
                parent_id=turn.user_message.id,
                role="assistant",
                model_id=model.id,
                status="streaming",
                context_mode=turn.mode,
            )
            for model, answer_id in zip(turn.models, turn.answer_ids, strict=True)
        ]
        if not turn.new_user_message:
            await self._repo.add_answer(answers[0])
            return
        if turn.user_images:
            turn.user_message.images = await self._images.put(
                turn.conversation.id, turn.user_message.id, turn.user_images
            )
        await self._repo.create_turn(
            turn.conversation,
            is_new=turn.is_new_conversation,
            messages=[turn.user_message, *answers],
            current_message_id=turn.answer_ids[0],
        )

    async def run(self, turn: Turn) -> AsyncIterator[ev.TurnEvent]:
        """Streams the turn's events. Leaving early (the client cancelled) cancels every answer, which closes
        the upstream streams and stores the partial answers as cancelled."""
        queue: asyncio.Queue[ev.TurnEvent | None] = asyncio.Queue()
        first_output = asyncio.Event()

        stored = asyncio.create_task(self._store_turn(turn, first_output))
        tasks = [
            asyncio.create_task(self._answer(turn, model, answer_id, stored, queue.put_nowait))
            for model, answer_id in zip(turn.models, turn.answer_ids, strict=True)
        ]
        pending = len(tasks)
        for task in tasks:
            task.add_done_callback(lambda _: queue.put_nowait(None))
        finished = False
        try:
            yield ev.TurnStarted(turn.conversation.id, turn.user_message.id)
            while pending:
                item = await queue.get()
                if item is None:
                    pending -= 1
                    continue
                if isinstance(item, ev.Delta):
                    # Under load several deltas may be waiting: send a model's consecutive ones as one event.
                    while not queue.empty():
                        following = queue.get_nowait()
                        if isinstance(following, ev.Delta) and following.model_id == item.model_id:
                            item = ev.Delta(item.model_id, item.text + following.text)
                            continue
                        yield item
                        first_output.set()
                        item = following
                        break
                    if item is None:
                        pending -= 1
                        continue
                yield item
                # Only once the first output has gone out may the turn's rows be written: the database work
                # then never delays the first token.
                if not first_output.is_set() and isinstance(item, ev.Delta | ev.AnswerDone | ev.AnswerFailed):
                    first_output.set()
            await stored  # raises if the turn could not be stored at all
            current = await self._settle_selection(turn, [t.result() for t in tasks])
            finished = True
            yield ev.TurnDone(turn.conversation.id, current)
        finally:
            if not finished:
                for task in tasks:
                    task.cancel()
                # Wait for the partial answers to be stored; a second cancellation must not cut that short.
                await asyncio.shield(asyncio.gather(*tasks, stored, return_exceptions=True))

    async def _settle_selection(self, turn: Turn, statuses: list[str]) -> str:
        """The first model's answer continues the conversation unless it failed and another one did not."""
        chosen = turn.answer_ids[0]
        if statuses[0] == "error":
            if not turn.new_user_message and turn.previous_current:
                await self._repo.set_current(turn.conversation.id, turn.previous_current, only_if=chosen)
                return turn.previous_current
            for answer_id, status in zip(turn.answer_ids[1:], statuses[1:], strict=True):
                if status == "done" and await self._repo.set_current(turn.conversation.id, answer_id, only_if=chosen):
                    return answer_id
        return chosen

    async def _answer(
        self,
        turn: Turn,
        model: ResolvedModel,
        answer_id: str,
        stored: asyncio.Task[None],
        emit: Callable[[ev.TurnEvent], None],
    ) -> str:
        """One model's answer in a span of its own: a two-model turn's answers are sibling spans of the call."""
        attributes = {"modelhub.model.id": model.id, "modelhub.answer.id": answer_id}
        with tracing.internal_span("answer", **attributes) as span:
            status = await self._answer_untraced(turn, model, answer_id, stored, emit)
            if status == "error":
                tracing.mark_failed(span, "the answer failed")
            return status

    async def _answer_untraced(
        self,
        turn: Turn,
        model: ResolvedModel,
        answer_id: str,
        stored: asyncio.Task[None],
        emit: Callable[[ev.TurnEvent], None],
    ) -> str:
        """One model's answer; returns its final status. Never raises except when cancelled."""
        started = time.monotonic()
        record = StoredMessage(
            id=answer_id,
            conversation_id=turn.conversation.id,
            parent_id=turn.user_message.id,
            role="assistant",
            model_id=model.id,
            status="streaming",
            context_mode=turn.mode,
        )
        parts: list[str] = []
        emit(ev.AnswerStarted(model.id, answer_id, turn.user_message.id))
        try:
            params = model.with_overrides(turn.overrides)
            if turn.user_images and not model.vision:
                raise VisionNotSupportedError(
                    f"'{model.id}' cannot read images: it does not have the vision capability. "
                    "Send the image to a vision model, or ask without it."
                )
            filters = await self._model_filters(model, emit)
            text = turn.user_message.content
            if filters.any_for("inlet") and self._filter_runner is not None:
                text = await self._filter(filters, "inlet", text, model, turn, emit)
            citations = await self._retrieve(turn, model, text)
            if citations:
                record.citations = citations
                emit(ev.CitationsFound(model.id, tuple(citations)))
            prompt = self._generator.build_prompt(
                model,
                params,
                user=PromptUser(turn.caller.principal.subject, turn.caller.principal.role),
                history=redacted(await self._history(turn, model), filters),
                current=PromptMessage("user", text, tuple(turn.user_images)),
                citations=citations,
                now=self._clock(),
            )
            # With outlet filters the answer is held back until it is whole: the client must never see text
            # the filters would have changed or refused.
            hold = filters.any_for("outlet") and self._filter_runner is not None
            if prompt.dropped_messages:
                emit(
                    ev.TurnWarning(
                        model.id,
                        "context_trimmed",
                        f"left out the {prompt.dropped_messages} oldest messages so that the conversation fits "
                        f"'{model.id}''s context of {params.get('num_ctx') or 'the default'} tokens",
                    )
                )
            toolkit, options = await self._toolkit(turn, model, params, emit)
            items = stream_with_tools(
                self._generator,
                self._runner,
                model,
                prompt.messages,
                params,
                options,
                toolkit,
                caller_token=turn.caller.token,
            )
            async for chunk in items:
                if isinstance(chunk, ev.ToolCalled):
                    record.tool_steps.append(chunk.step)
                    emit(chunk)
                    continue
                if isinstance(chunk, ev.ToolFinished):
                    for n, step in enumerate(record.tool_steps):
                        if step.call_id == chunk.step.call_id:
                            record.tool_steps[n] = chunk.step
                    emit(chunk)
                    continue
                if chunk.warning is not None:
                    emit(ev.TurnWarning(model.id, chunk.warning.code, chunk.warning.message))
                if chunk.text:
                    if not parts:
                        record.time_to_first_token = time.monotonic() - started
                    parts.append(chunk.text)
                    if not hold:
                        emit(ev.Delta(model.id, chunk.text))
                if chunk.finish_reason:
                    record.finish_reason = chunk.finish_reason
                if chunk.usage is not None:
                    record.usage = chunk.usage
            if hold and parts:
                held, parts = "".join(parts), []  # nothing of a refused answer is stored
                parts = [await self._filter(filters, "outlet", held, model, turn, emit)]
                if parts[0]:
                    emit(ev.Delta(model.id, parts[0]))
            record.status = "done"
            if not parts:
                emit(ev.TurnWarning(model.id, EMPTY_ANSWER.code, EMPTY_ANSWER.message))
        except asyncio.CancelledError:
            record.status, record.finish_reason = "cancelled", "cancelled"
            record.content, record.total_seconds = "".join(parts), time.monotonic() - started
            await asyncio.shield(self._finish(record, stored))
            raise
        except ModelhubError as exc:
            code = exc.code if isinstance(exc, GatewayError) else "unavailable"
            record.status, record.error_code, record.error_message = "error", code, exc.message
            logger.info("answer failed", extra={"model": model.id, "code": code, "error": exc.message})
        except Exception as exc:  # a bug must fail this answer only, never the other model's
            logger.exception("answer crashed", extra={"model": model.id})
            record.status, record.error_code = "error", "internal"
            record.error_message = f"the gateway failed while answering: {type(exc).__name__}"
        record.content, record.total_seconds = "".join(parts), time.monotonic() - started
        if record.status == "done":
            emit(
                ev.AnswerDone(
                    model.id,
                    answer_id,
                    record.finish_reason or "stop",
                    record.usage,
                    record.time_to_first_token,
                    record.total_seconds,
                )
            )
        else:
            emit(ev.AnswerFailed(model.id, answer_id, record.error_code, record.error_message))
        await self._finish(record, stored)
        return record.status

    async def _toolkit(
        self, turn: Turn, model: ResolvedModel, params: dict[str, Any], emit: Callable[[ev.TurnEvent], None]
    ) -> tuple[Toolkit, ToolOptions]:
        """The model file's server-side tools this caller may run, and the options of the first round."""
        if not model.tool_ids:
            return Toolkit(), ToolOptions()
        if self._tools is None or self._runner is None:
            said = "this gateway runs no tools: the model's tools are left out"
            emit(ev.TurnWarning(model.id, "tools_unavailable", said))
            return Toolkit(), ToolOptions()
        resolved = await self._tools.resolve(model.tool_ids, turn.caller)
        for warning in resolved.warnings:
            emit(ev.TurnWarning(model.id, warning.code, warning.message))
        options = plan_options(resolved.toolkit, ToolOptions(), params)
        if resolved.toolkit and (problem := self._generator.unsupported(model, options)):
            raise InvalidRequestError(
                f"'{model.id}' has tools but its {model.location.backend} backend cannot offer them this way: "
                f"{problem}. Set the model file's params.tool_choice (a tool's name, or 'required' with one tool), "
                "or run it on an Ollama or OpenAI-compatible connection"
            )
        return resolved.toolkit, options

    async def _finish(self, record: StoredMessage, stored: asyncio.Task[None]) -> None:
        try:
            await stored
            await self._repo.finish_answer(record)
        except (ModelhubError, asyncio.CancelledError) as exc:
            logger.error("could not store an answer", extra={"message_id": record.id, "error": repr(exc)})

    async def _retrieve(self, turn: Turn, model: ResolvedModel, query: str) -> list[Citation]:
        if not model.knowledge_ids or not query.strip():
            return []
        return await self._rag.retrieve(model.knowledge_ids, query, self._limits.rag_top_k, turn.caller.token)

    async def _model_filters(self, model: ResolvedModel, emit: Callable[[ev.TurnEvent], None]) -> ModelFilters:
        if not model.filter_ids:
            return ModelFilters()
        if self._filters is None or self._filter_runner is None:
            raise FilterFailedError(
                f"'{model.id}' has filters, but this gateway runs none; it does not answer without them",
                filter_id=model.filter_ids[0],
                stage="inlet",
            )
        found = await self._filters.for_ids(model.filter_ids)
        for warning in found.warnings:
            emit(ev.TurnWarning(model.id, warning.code, warning.message))
        return found

    async def _filter(
        self,
        filters: ModelFilters,
        stage: Stage,
        text: str,
        model: ResolvedModel,
        turn: Turn,
        emit: Callable[[ev.TurnEvent], None],
    ) -> str:
        assert self._filter_runner is not None
        text, notices = await self._filter_runner.run(
            stage, filters.specs, text, model_id=model.id, user_id=turn.caller.principal.subject
        )
        for notice in notices:
            emit(ev.TurnWarning(model.id, notice.code, notice.message))
        return text

    async def _history(self, turn: Turn, model: ResolvedModel) -> list[PromptMessage]:
        messages = history_for(turn.tree, turn.user_message.parent_id, model.id, turn.mode)
        result: list[PromptMessage] = []
        for message in messages:
            images: tuple[ImageData, ...] = ()
            # Earlier images go to vision models only; others still get the text of those turns.
            if message.images and model.vision:
                images = tuple(await self._images.get(message.images))
            role: Role = "user" if message.role == "user" else "assistant"
            result.append(PromptMessage(role, message.content, images))
        return result

    # ---- conversations

    async def get(self, caller: Caller, conversation_id: str) -> tuple[ConversationRecord, MessageTree]:
        return await self._load(conversation_id, caller)

    async def image_urls(self, message: StoredMessage) -> list[str]:
        return [await self._images.url(i) for i in message.images]

    async def list_conversations(self, caller: Caller, limit: int, cursor: str) -> tuple[list[ConversationRecord], str]:
        limit = min(max(limit or 20, 1), 100)
        after: tuple[datetime, str] | None = None
        if cursor:
            stamp, _, conversation_id = cursor.partition("|")
            try:
                after = (datetime.fromisoformat(stamp), str(uuid.UUID(conversation_id)))
            except ValueError as exc:
                raise InvalidRequestError("cursor: not a cursor this API gave out") from exc
        items = await self._repo.recent(caller.principal.subject, limit + 1, after)
        next_cursor = ""
        if len(items) > limit:
            items = items[:limit]
            next_cursor = f"{items[-1].updated_at.isoformat()}|{items[-1].id}"
        return items, next_cursor

    async def delete(self, caller: Caller, conversation_id: str) -> None:
        keys = await self._repo.delete(conversation_id, caller.principal.subject)
        if keys is None:
            raise ConversationNotFoundError(f"conversation '{conversation_id}' does not exist")
        await self._images.delete(keys)

    async def run_action(self, caller: Caller, conversation_id: str, message_id: str, action_id: str) -> StoredMessage:
        """Runs one of the answer's model's actions with the answer as its input; stores and returns the result
        (a child of the answer with role "action"). A failing tool is stored as a failed result, not raised."""
        _, tree = await self._load(conversation_id, caller)
        answer = tree.by_id.get(message_id)
        if answer is None or answer.role != "assistant":
            raise InvalidRequestError(f"message_id: '{message_id}' is not an answer in this conversation")
        if answer.status != "done" or not answer.content:
            raise InvalidRequestError(f"message_id: the answer is {answer.status}; actions run on finished answers")
        model = (await self._resolve_all([answer.model_id], caller))[0]
        if action_id not in model.action_ids:
            offered = ", ".join(model.action_ids) or "none"
            raise InvalidRequestError(
                f"action_id: '{action_id}' is not an action of '{model.id}' (its actions: {offered})"
            )
        if self._tools is None or self._runner is None:
            raise InvalidRequestError("action_id: this gateway runs no tools")
        server_id, tool_name = split_action(action_id)
        resolved = await self._tools.resolve([server_id], caller)
        if resolved.warnings:
            raise InvalidRequestError(f"action_id: {resolved.warnings[0].message}")
        tools = [t for t in resolved.toolkit.tools.values() if tool_name in (None, t.spec.name)]
        if len(tools) != 1:
            what = f"no tool '{tool_name}'" if tool_name else f"{len(tools)} tools; name one as '{server_id}/TOOL'"
            raise InvalidRequestError(f"action_id: tool server '{server_id}' has {what}")
        tool = tools[0]
        field_name = text_parameter(tool.spec.parameters)
        if field_name is None:
            raise InvalidRequestError(
                f"action_id: tool '{tool.spec.name}' takes no text parameter, so it cannot be given the answer"
            )
        call = ToolCall(f"action_{uuid.uuid4().hex[:24]}", tool.name, json.dumps({field_name: answer.content}))
        record = ToolStepRecord(1, call.id, tool.spec.name, tool.server_id, call.arguments)
        await self._runner.run_one(resolved.toolkit, call, record, caller.token)
        result = StoredMessage(
            id=_new_id(),
            conversation_id=conversation_id,
            parent_id=answer.id,
            role="action",
            model_id=answer.model_id,
            content=record.content,
            status="done" if record.ok else "error",
            error_code="" if record.ok else f"action_{record.error_code or 'failed'}",
            error_message="" if record.ok else record.content,
            total_seconds=record.duration_seconds,
            tool_steps=[record],
            action_id=action_id,
        )
        return await self._repo.add_action_result(result)

    async def select_answer(self, caller: Caller, conversation_id: str, message_id: str) -> None:
        _, tree = await self._load(conversation_id, caller)
        message = tree.by_id.get(message_id)
        if message is None:
            raise InvalidRequestError(f"message_id: '{message_id}' is not a message of this conversation")
        if message.role != "assistant":
            raise InvalidRequestError("message_id: choose an answer (an assistant message)")
        await self._repo.set_current(conversation_id, tree.latest_leaf(message_id))
