"""The local backend: GGUF models from the model store, run in-process with llama-cpp-python.

* A model's GGUF blob (``blobs/sha256/<hex>`` in ``details.store_bucket``) is fetched once into a local cache
  directory, checked against its digest while it downloads, and renamed into place.
* ``workers`` threads each own their instances (llama.cpp contexts are not shared between threads) and keep
  at most ``max_resident`` of them loaded, least recently used evicted first. A request goes to an idle
  worker that already has the model loaded, else to the idle worker with the fewest models.
* Each conversation is formatted with the model's own chat template (see
  :mod:`modelhub_chat_gateway.domain.chat_template`), tokenized and completed; the format is chosen once per
  loaded model.
* Generation runs in the worker thread (llama.cpp releases the GIL), and each token is handed to the event
  loop. Closing the stream sets a flag the worker checks between tokens, so generation stops at once.

Nothing here is bound to one event loop: a worker hands results to whichever loop asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from modelhub_chat_gateway.domain.chat_template import ChatTemplateError, PromptFormat, choose_format
from modelhub_chat_gateway.domain.chat_types import (
    BackendRequest,
    BackendWarning,
    PromptMessage,
    StreamChunk,
    ToolCall,
    ToolOptions,
    Usage,
)
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.domain.params import int_param, to_llama_kwargs
from modelhub_chat_gateway.errors import BackendError, InvalidRequestError
from modelhub_common.errors import ModelhubError
from modelhub_common.objectstore import ObjectStore

logger = logging.getLogger(__name__)

_DOWNLOAD_CHUNK = 8 * 1024 * 1024


class LocalModel(Protocol):
    """What the worker needs from a loaded model (llama_cpp.Llama satisfies it)."""

    @property
    def metadata(self) -> dict[str, str]: ...

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False) -> bytes: ...

    def token_bos(self) -> int: ...

    def token_eos(self) -> int: ...

    def create_completion(self, prompt: list[int], **kwargs: Any) -> Any: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


ModelLoader = Callable[[Path, int, int], LocalModel]


_patch_lock = threading.Lock()
_patched = False


def _disable_extra_buffer_types() -> None:
    """Loads weights without llama.cpp's "extra buffer types" (CPU repacking, AMX).

    A llama.cpp built natively on a CPU with AMX (the machines this project runs on) crashes with SIGSEGV in
    its AMX matrix multiplication at the first decode. ``Llama()`` has no argument for the model parameter
    ``use_extra_bufts``, so its default-parameters factory is wrapped once, before any model is loaded.
    """
    global _patched
    with _patch_lock:
        if _patched:
            return
        # llama_cpp.llama calls the factory through this module at load time, so replacing it here is enough.
        import llama_cpp.llama_cpp as native

        original = native.llama_model_default_params

        def without_extra_buffer_types() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        setattr(native, "llama_model_default_params", without_extra_buffer_types)  # noqa: B010
        _patched = True


def llama_loader(path: Path, n_ctx: int, threads: int) -> LocalModel:
    _disable_extra_buffer_types()
    from llama_cpp import Llama  # imported on first use: loading the native library takes a moment

    model = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    return cast(LocalModel, model)


class ModelFileCache:
    """GGUF blobs from the object store, kept in a local directory under their digest."""

    def __init__(self, store: ObjectStore, directory: Path) -> None:
        self._store = store
        self._dir = directory
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path_for(self, digest_hex: str) -> Path:
        return self._dir / f"sha256-{digest_hex}.gguf"

    def ensure(self, bucket: str, digest: str) -> Path:
        """Blocking: returns the local file, downloading and verifying it first if needed."""
        digest_hex = digest.removeprefix("sha256:").lower()
        if len(digest_hex) != 64 or any(c not in "0123456789abcdef" for c in digest_hex):
            raise BackendError(f"'{digest}' is not a sha256 digest", code="model_unusable")
        target = self.path_for(digest_hex)
        if target.exists():
            return target
        with self._guard:
            lock = self._locks.setdefault(digest_hex, threading.Lock())
        with lock:
            if target.exists():
                return target
            self._dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".part-{os.getpid()}-{threading.get_ident()}")
            key = f"blobs/sha256/{digest_hex}"
            hasher = hashlib.sha256()
            try:
                with self._store.get_stream(bucket, key, chunk_size=_DOWNLOAD_CHUNK) as stream, partial.open("wb") as f:
                    while chunk := stream.read(_DOWNLOAD_CHUNK):
                        hasher.update(chunk)
                        f.write(chunk)
                if hasher.hexdigest() != digest_hex:
                    raise BackendError(f"the blob {bucket}/{key} does not match its digest", code="model_unusable")
                partial.rename(target)
            except ModelhubError as exc:
                if isinstance(exc, BackendError):
                    raise
                raise BackendError(
                    f"cannot fetch the model file {bucket}/{key}: {exc.message}", code="model_unusable"
                ) from exc
            finally:
                partial.unlink(missing_ok=True)
            logger.info("model file cached", extra={"digest": digest_hex, "path": str(target)})
            return target


_END = object()
#: A grammar the whole answer must follow: ("json", "") for any JSON object, ("schema", text) for a JSON schema.
Grammar = tuple[str, str]


def unsupported(options: ToolOptions) -> str | None:
    """What of ``options`` the local backend cannot do, or None. It calls a tool only when made to (llama.cpp
    then generates the arguments under a grammar built from the tool's schema): it does not choose by itself."""
    if not options.active:
        return None
    if options.forced or (options.choice == "required" and len(options.active) == 1):
        return None
    return (
        "tool_choice: the local backend calls a tool only when tool_choice names the function (or is 'required' "
        "with one tool); name it, or use 'none', or run the model on an Ollama or OpenAI-compatible connection"
    )


def _forced_tool(options: ToolOptions) -> str | None:
    if not options.active:
        return None
    return options.forced or options.active[0].name


def _grammar(options: ToolOptions) -> Grammar | None:
    forced = _forced_tool(options)
    if forced is not None:
        definition = options.definition(forced)
        schema = definition.parameters if definition is not None else {"type": "object"}
        return ("schema", json.dumps(schema))
    response_format = options.response_format or {}
    if response_format.get("type") == "json_object":
        return ("json", "")
    if response_format.get("type") == "json_schema":
        wanted = (response_format.get("json_schema") or {}).get("schema")
        return ("schema", json.dumps(wanted)) if wanted else ("json", "")
    return None


def _plain(message: PromptMessage) -> dict[str, str]:
    """A message as a chat template can render it: tool calls and results written out as text, since small
    local models' templates know no tool roles."""
    if message.role == "tool":
        return {"role": "user", "content": f"Result of tool call {message.tool_call_id}:\n{message.content}"}
    if message.tool_calls:
        calls = "\n".join(json.dumps({"tool": c.name, "arguments": c.arguments}) for c in message.tool_calls)
        return {"role": "assistant", "content": f"{message.content}\n{calls}".strip()}
    return {"role": message.role, "content": message.content}


def _compile_grammar(grammar: Grammar) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    kind, text = grammar
    if kind == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        return LlamaGrammar.from_json_schema(text, verbose=False)
    except Exception as exc:  # llama.cpp's converter raises plain exceptions for schemas it cannot turn into GBNF
        raise InvalidRequestError(f"the JSON schema cannot be used as a grammar by the local backend: {exc}") from exc


@dataclass
class _Job:
    key: tuple[str, int]
    model_name: str
    messages: list[dict[str, str]]
    kwargs: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[object]
    recorded_template: str | None = None
    grammar: Grammar | None = None
    #: The tool the answer is a call of: the whole output is its arguments, sent as one tool call.
    tool: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def push(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel.set()


class _Worker:
    def __init__(self, index: int, capacity: int, threads: int, loader: ModelLoader, flush_seconds: float) -> None:
        self.index = index
        self._flush_seconds = flush_seconds
        self.busy = False
        self.models: OrderedDict[tuple[str, int], LocalModel] = OrderedDict()
        self._formats: dict[tuple[str, int, str | None, str], PromptFormat] = {}
        self._capacity = capacity
        self._threads = threads
        self._loader = loader
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"llama-worker-{index}")

    def _model(self, key: tuple[str, int]) -> LocalModel:
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        while len(self.models) >= self._capacity:
            evicted_key, evicted = self.models.popitem(last=False)
            self._formats = {k: v for k, v in self._formats.items() if k[:2] != evicted_key}
            logger.info("local model evicted", extra={"worker": self.index, "model": evicted_key[0]})
            with contextlib.suppress(Exception):
                evicted.close()
        path, n_ctx = key
        model = self._loader(Path(path), n_ctx, self._threads)
        self.models[key] = model
        logger.info("local model loaded", extra={"worker": self.index, "model": path, "n_ctx": n_ctx})
        return model

    def _format(self, job: _Job, model: LocalModel) -> PromptFormat:
        key = (*job.key, job.recorded_template, job.model_name)
        found = self._formats.get(key)
        if found is None:
            found = choose_format(
                model.metadata,
                job.recorded_template,
                model=job.model_name,
                bos_token=_token_text(model, model.token_bos()),
                eos_token=_token_text(model, model.token_eos()),
            )
            self._formats[key] = found
            logger.info("local model prompt format", extra={"model": job.model_name, "format": found.description})
        return found

    def run(self, job: _Job) -> None:
        """Runs in the worker's thread."""
        try:
            if job.cancel.is_set():
                return
            model = self._model(job.key)
            prompt_format = self._format(job, model)
            if prompt_format.warning:
                job.push(StreamChunk(warning=BackendWarning("no_chat_template", prompt_format.warning)))
            try:
                text = prompt_format.render(job.messages)
            except ChatTemplateError as exc:
                raise BackendError(
                    f"'{job.model_name}' cannot format this conversation with {prompt_format.description}: {exc}",
                    code="chat_template_error",
                ) from exc
            bos = _token_text(model, model.token_bos())
            # A template that writes the begin-of-sequence token itself must not get a second one.
            prompt = model.tokenize(text.encode(), add_bos=not (bos and text.startswith(bos)), special=True)
            kwargs = dict(job.kwargs)
            stop = [*(kwargs.pop("stop", None) or []), *prompt_format.stop]
            if stop:
                kwargs["stop"] = list(dict.fromkeys(stop))
            if job.grammar is not None:
                kwargs["grammar"] = _compile_grammar(job.grammar)
            arguments: list[str] = []
            # Every prompt is evaluated whole, never after a prefix another answer left in the context:
            # llama.cpp's batched and one-token paths differ in the last bits, enough to change a greedy
            # answer, so reusing a prefix would make temperature 0 + seed give different answers depending on
            # what the worker ran before (and let one conversation's state shape another's).
            model.reset()
            completion = model.create_completion(prompt=prompt, stream=True, **kwargs)
            produced = 0
            finish: str | None = None
            # The first token goes out at once; later ones are handed over in batches, at most every
            # flush_seconds, so the event loop wakes less often while llama.cpp's threads need the cores.
            held: list[str] = []
            next_flush = 0.0
            try:
                for chunk in completion:
                    if job.cancel.is_set():
                        finish = "cancelled"
                        break
                    choice = (chunk.get("choices") or [{}])[0]
                    piece = choice.get("text") or ""
                    if piece and job.tool is not None:
                        produced += 1
                        arguments.append(piece)
                    elif piece:
                        produced += 1
                        held.append(piece)
                        now = time.monotonic()
                        if now >= next_flush:
                            job.push(StreamChunk("".join(held)))
                            held.clear()
                            next_flush = now + self._flush_seconds
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            finally:
                close = getattr(completion, "close", None)
                if close is not None:
                    close()
            if held and finish != "cancelled":
                job.push(StreamChunk("".join(held)))
            if job.tool is not None and finish != "cancelled":
                call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", job.tool, "".join(arguments).strip() or "{}")
                job.push(StreamChunk(tool_calls=(call,)))
                finish = "tool_calls"
            job.push(StreamChunk(finish_reason=finish or "stop", usage=Usage(len(prompt), produced)))
        except Exception as exc:  # handed to the event loop, where it becomes a BackendError
            job.push(exc)
        finally:
            job.push(_END)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for model in self.models.values():
            with contextlib.suppress(Exception):
                model.close()
        self.models.clear()


class _WorkerPool:
    """Hands out idle workers; waiters on any event loop are woken when one is released."""

    def __init__(self, workers: list[_Worker]) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def _pick(self, key: tuple[str, int]) -> _Worker | None:
        idle = [w for w in self.workers if not w.busy]
        if not idle:
            return None
        warm = [w for w in idle if key in w.models]
        return warm[0] if warm else min(idle, key=lambda w: len(w.models))

    async def acquire(self, key: tuple[str, int]) -> _Worker:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                worker = self._pick(key)
                if worker is not None:
                    worker.busy = True
                    return worker
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            try:
                await waiter
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, waiter))

    def release(self, worker: _Worker) -> None:
        with self._lock:
            worker.busy = False
            waiters = list(self._waiters)
        # Every waiter tries again: cheap for the handful that ever wait, and no wake-up is lost.
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, waiter)


def _token_text(model: LocalModel, token: int) -> str:
    if token < 0:
        return ""
    try:
        return model.detokenize([token], special=True).decode("utf-8", "replace")
    except Exception:  # a vocabulary without that token: the template simply gets an empty string
        return ""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LocalLlamaBackend:
    def __init__(
        self,
        files: ModelFileCache,
        *,
        workers: int,
        max_resident: int,
        threads_per_worker: int,
        default_ctx: int,
        max_ctx: int,
        loader: ModelLoader = llama_loader,
        default_max_tokens: int | None = None,
        flush_seconds: float = 0.0,
    ) -> None:
        threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        # llama.cpp otherwise generates until the context is full when a model never emits end-of-text.
        self._default_max_tokens = default_max_tokens
        self._files = files
        self._pool = _WorkerPool([_Worker(i, max_resident, threads, loader, flush_seconds) for i in range(workers)])
        self._default_ctx = default_ctx
        self._max_ctx = max_ctx

    def unsupported(self, options: ToolOptions) -> str | None:
        return unsupported(options)

    @property
    def resident(self) -> list[list[str]]:
        """What each worker has loaded (for tests and diagnostics)."""
        return [[path for path, _ in w.models] for w in self._pool.workers]

    def _kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = to_llama_kwargs(params)
        if self._default_max_tokens is not None:
            kwargs.setdefault("max_tokens", self._default_max_tokens)
        return kwargs

    async def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        if not location.store_bucket or not location.model_digest:
            raise BackendError(
                f"base model '{request.model}' has no details.model_digest/store_bucket", code="model_unusable"
            )
        if any(m.images for m in request.messages):
            raise BackendError("the local backend cannot read images", code="vision_not_supported")
        if problem := unsupported(request.tools):
            raise InvalidRequestError(problem)
        path = await asyncio.to_thread(self._files.ensure, location.store_bucket, location.model_digest)
        asked = int_param(request.params, "num_ctx")
        n_ctx = min(asked or self._default_ctx, self._max_ctx)
        if location.context_length and n_ctx > location.context_length:
            n_ctx = location.context_length
        if asked and asked > n_ctx:
            limit = "the model's own context" if n_ctx == location.context_length else "the gateway's max_ctx"
            yield StreamChunk(
                warning=BackendWarning(
                    "num_ctx_reduced", f"num_ctx {asked} is more than {limit}; '{request.model}' runs with {n_ctx}"
                )
            )
        key = (str(path), n_ctx)
        loop = asyncio.get_running_loop()
        job = _Job(
            key=key,
            model_name=request.model,
            messages=[_plain(m) for m in request.messages],
            kwargs=self._kwargs(request.params),
            loop=loop,
            queue=asyncio.Queue(),
            recorded_template=location.chat_template,
            grammar=_grammar(request.tools),
            tool=_forced_tool(request.tools),
        )
        worker = await self._pool.acquire(key)
        try:
            worker.executor.submit(self._run_and_release, worker, job)
        except BaseException:
            self._pool.release(worker)
            raise
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, BaseException):
                    raise BackendError(f"the local model failed: {item}", code="backend_error") from item
                assert isinstance(item, StreamChunk)
                yield item
        finally:
            job.cancel.set()

    def _run_and_release(self, worker: _Worker, job: _Job) -> None:
        # The worker is free again only when its thread has really stopped, not when the caller gives up.
        try:
            worker.run(job)
        finally:
            self._pool.release(worker)

    def close(self) -> None:
        for worker in self._pool.workers:
            worker.close()
